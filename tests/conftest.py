"""Shared pytest fixtures."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from facegate.config import Settings
from facegate.gallery import EmbeddedServer, Gallery

# ============================================================================================
# Database fixtures (gallery): one real embedded PostgreSQL for the whole session, and a fresh
# empty database per test on it.
# ============================================================================================

GALLERY_TEST_MODEL = "test-model"
GALLERY_TEST_DIM = 16


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The embedded PostgreSQL server of this test session, in a temporary data directory."""
    server = EmbeddedServer(Path(tmp_path_factory.mktemp("gallery-db")) / "pg")
    server.start()
    yield server
    server.release()  # the last user: stops it


@pytest.fixture
def gallery_dsn(pg_server: EmbeddedServer) -> Iterator[str]:
    """The DSN of a new, empty database (no schema yet), dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    admin_dsn = pg_server.dsn("postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_server.dsn(name)
    # A test may have stopped and restarted the server: reconnect rather than reuse a connection.
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def gallery(gallery_dsn: str) -> Iterator[Gallery]:
    """An empty gallery of GALLERY_TEST_DIM-dimensional embeddings of GALLERY_TEST_MODEL."""
    opened = Gallery.open(gallery_dsn, GALLERY_TEST_MODEL, GALLERY_TEST_DIM, timeout=2.0)
    yield opened
    opened.close()


# ============================================================================================
# End of the database fixtures.
# ============================================================================================


# ============================================================================================
# API fixtures: one app (real models, real embedded PostgreSQL) for the whole session.
# ============================================================================================

API_KEY = "test-key-" + uuid.uuid4().hex


@pytest.fixture(scope="session")
def api_settings(pg_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of the API under test: its own database on the session's server."""
    name = f"api_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return Settings(
        app_token=API_KEY,
        database_url=pg_server.dsn(name),
        facegate_data_dir=tmp_path_factory.mktemp("facegate-data"),
        _env_file=None,
    )


@pytest.fixture(scope="session")
def anonymous(api_settings: Settings) -> Iterator[TestClient]:
    """A client of the API under test that sends no key."""
    from facegate.api.app import create_app  # the models load only in the sessions that need them

    with TestClient(create_app(api_settings)) as test_client:
        yield test_client


@pytest.fixture
def client(anonymous: TestClient) -> Iterator[TestClient]:
    """A client of the same app that sends the right key."""
    anonymous.headers["X-API-Key"] = API_KEY
    yield anonymous
    del anonymous.headers["X-API-Key"]
