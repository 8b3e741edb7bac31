"""Shared pytest fixtures (the helpers and constants they use are in tests/support.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from facegate.config import Settings
from facegate.gallery import EmbeddedServer, Gallery
from tests.data import FACES, REFERENCE
from tests.servers import service_data_dir
from tests.support import (
    API_KEY,
    GALLERY_TEST_DIM,
    GALLERY_TEST_MODEL,
    SCOPED_KEYS,
    app_settings,
    create_database,
    running_app,
)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once, saying where, when the shared photos are not beside the repository: most
    tests use them, and a few hundred missing-file errors would hide the one cause."""
    missing = [str(folder) for folder in (FACES, REFERENCE) if not folder.is_dir()]
    if missing:
        pytest.exit(
            f"the tests need the shared test data, not found at {', '.join(missing)}: put the "
            "folder 'shared' (with data/faces and data/reference) beside this repository",
            returncode=4,
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules of slow tests first: the most wholly slow first, then those with more slow tests;
    each module's tests stay together and in their order.

    `./test.sh` runs the suite on pytest-xdist workers with `--dist loadfile`: a module is one unit
    of work, handed out in this order, so a long module started last would keep one worker busy
    while the others idle (longest first is the classic greedy schedule).
    """
    tests: dict[Path, int] = {}
    slow: dict[Path, int] = {}
    for item in items:
        tests[item.path] = tests.get(item.path, 0) + 1
        slow[item.path] = slow.get(item.path, 0) + (item.get_closest_marker("slow") is not None)
    # Stable: modules that tie, and those without slow tests, keep their order.
    items.sort(key=lambda item: (-slow[item.path] / tests[item.path], -slow[item.path]))


# A uuid4().hex or token_hex(16): the keys tests make at import, different in every process.
_RANDOM_HEX = re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")


def pytest_make_parametrize_id(val: object) -> str | None:
    """Test ids without the random hex of a parameter (a key made per process): pytest-xdist's
    workers each import the tests and must collect the same ids; stable ids also let `--lf` and
    `pytest 'tests/x.py::test[id]'` find a test again. Other values keep pytest's own ids."""
    if isinstance(val, str) and _RANDOM_HEX.search(val):
        return _RANDOM_HEX.sub("<hex>", val).encode("unicode_escape").decode("ascii")
    return None


# ============================================================================================
# Database fixtures (gallery): one real embedded PostgreSQL for the whole session, and a fresh
# empty database per test on it.
# ============================================================================================


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedServer]:
    """The embedded PostgreSQL server of this test session, in a temporary data directory."""
    with service_data_dir("facegate-test-pg-") as directory:
        server = EmbeddedServer(directory / "pg")
        server.start()
        yield server
        server.release()  # the last user: stops it


@pytest.fixture
def pgdata_dir() -> Iterator[Path]:
    """A fresh directory for a test's own embedded server (`<dir>/pg`)."""
    with service_data_dir("facegate-test-pg-") as directory:
        yield directory


@pytest.fixture
def data_dir(pgdata_dir: Path) -> Path:
    """A fresh FACEGATE_DATA_DIR for a test's own service: its embedded database goes in `<dir>/pg`,
    outside pytest's folder like `pgdata_dir`."""
    return pgdata_dir


@pytest.fixture
def gallery_dsn(pg_server: EmbeddedServer) -> Iterator[str]:
    """The DSN of a new, empty database (no schema yet), dropped after the test."""
    dsn = create_database(pg_server)
    yield dsn
    # A test may have stopped and restarted the server: reconnect rather than reuse a connection.
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        name = str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])
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


@pytest.fixture(scope="session")
def api_settings(pg_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of the API under test: its own database on the session's server."""
    return app_settings(pg_server, tmp_path_factory.mktemp("facegate-data"))


@pytest.fixture(scope="session")
def anonymous(api_settings: Settings) -> Iterator[TestClient]:
    """A client of the API under test that sends no key."""
    yield from running_app(api_settings)


@pytest.fixture
def client(anonymous: TestClient) -> Iterator[TestClient]:
    """A client of the same app that sends the right key."""
    anonymous.headers["X-API-Key"] = API_KEY
    yield anonymous
    del anonymous.headers["X-API-Key"]


# ============================================================================================
# A second app with a key of each scope (security and fuzz tests): its own database, so that
# generated requests cannot touch the first app's gallery.
# ============================================================================================


@pytest.fixture(scope="session")
def secured(pg_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A client, sending no key, of an app configured with FACEGATE_API_KEYS (`SCOPED_KEYS`)."""
    settings = app_settings(
        pg_server,
        tmp_path_factory.mktemp("facegate-secured"),
        facegate_api_keys=",".join(f"{scope}-client:{scope}:{key}" for scope, key in SCOPED_KEYS.items()),
    )
    yield from running_app(settings)
