"""Real Redis and PostgreSQL servers for the tests, started on 127.0.0.1 random ports.

Skipped with a clear reason when the binaries are missing, unless CI is set: there a
missing server fails the run (scripts/test installs them: apt-get install redis-server
postgresql). Session-scoped; stopped, and their directories removed, at the end.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import pytest

__all__ = [
    "PostgresServer",
    "RedisServer",
    "free_port",
    "postgres_server",
    "postgres_url",
    "redis_server",
    "redis_url",
    "wait_until",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout}s")
        time.sleep(0.02)


def _missing(what: str, package: str | None = None) -> None:
    install = f"apt-get install {package or what}"
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing, and CI is set: {install}")
    pytest.skip(f"{what} is missing ({install}; bash scripts/test does it)")


def _pongs(port: int) -> bool:
    # Redis accepts connections while it loads its data (an append-only file after a
    # restart) and answers LOADING to every command until it is done: ready is a PONG.
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class _Server:
    """A server process whose output goes to a log file in its own temporary directory."""

    name = "server"

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix=f"tf-{self.name}-")
        self.log_path = os.path.join(self.dir, "server.log")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str]) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def _wait_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        def up() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log()}")
            return ready()

        try:
            wait_until(up, timeout, f"{self.name} start")
        except TimeoutError:
            self.stop()
            raise

    def log(self) -> str:
        """The last lines the server wrote."""
        try:
            with open(self.log_path, errors="replace") as log:
                return "".join(log.readlines()[-20:])
        except OSError:
            return ""

    def halt(self) -> None:
        """Stop the process, keeping its data for :meth:`start`."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        """Stop the process and remove its directory."""
        self.halt()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer(_Server):
    """A throwaway redis-server; ``persistent=True`` keeps data across :meth:`halt` and
    :meth:`start` (append-only file, fsync on every write)."""

    name = "redis-server"

    def __init__(self, *, persistent: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            _missing("redis-server")
        super().__init__()
        self.binary = binary or "redis-server"
        self.persistent = persistent
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.socket_path = os.path.join(self.dir, "redis.sock")
        self.start()

    def start(self) -> None:
        """Start (or restart) the server on its port and directory."""
        durability = ["--appendonly", "yes", "--appendfsync", "always"]
        self._spawn(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *(durability if self.persistent else ["--appendonly", "no"]),
                "--unixsocket",
                self.socket_path,
                "--dir",
                self.dir,
            ]
        )
        self._wait_ready(lambda: _pongs(self.port), 10)

    def flush(self) -> None:
        """Delete every key."""
        import redis

        with redis.Redis.from_url(self.url) as client:
            client.flushall()


def _postgres_bindir() -> str | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(path.split("/")[-3]) if path.split("/")[-3].isdigit() else 0,
    )
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb") or shutil.which("pg_ctl")
    return os.path.dirname(initdb) if initdb else None


class PostgresServer(_Server):
    """A throwaway PostgreSQL cluster with trust auth, run by ``pg_ctl`` as the
    ``postgres`` user when we are root (PostgreSQL refuses to run as root)."""

    name = "postgresql"

    def __init__(self) -> None:
        bindir = _postgres_bindir()
        if bindir is None:
            _missing("postgresql")
        super().__init__()
        self.bindir = bindir or ""
        self.as_owner: list[str] = []
        if os.geteuid() == 0:
            try:
                shutil.chown(self.dir, "postgres")
            except LookupError:
                shutil.rmtree(self.dir, ignore_errors=True)
                _missing("the 'postgres' OS user", "postgresql")
            self.as_owner = ["runuser", "-u", "postgres", "--"]
        self.data = os.path.join(self.dir, "data")
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.running = False
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self.as_owner, os.path.join(self.bindir, tool), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed:\n{done.stdout}{done.stderr}{self.log()}")

    def start(self) -> None:
        """Start (or restart) the server on its port and data directory."""
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        try:
            self._run("pg_ctl", "-D", self.data, "-l", self.log_path, "-o", options, "-w", "start")
        except Exception:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.running = True
        self._wait_ready(self._ready, 30)

    def halt(self) -> None:
        """Stop the server ("fast": clients are disconnected), keeping its data."""
        if self.running:
            self.running = False
            self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def _ready(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def fresh_database(self) -> str:
        """Create an empty database; return its URL."""
        import secrets

        import psycopg

        name = "tf_" + secrets.token_hex(4)
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session."""
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database on the session's PostgreSQL."""
    return postgres_server.fresh_database()
