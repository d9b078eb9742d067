"""A lean asyncio Redis connection for the Redis store's async twin: hiredis, pipelined.

What a confirm costs on the event loop is mostly the client around its one round trip
(redis-py's asyncio client: a pool, a lock, stream readers, a timeout task per call). This
module keeps only what the twin's few commands need: one TCP connection per event loop, an
:class:`asyncio.Protocol` that parses with ``hiredis.Reader`` and encodes with
``hiredis.pack_command``, concurrent calls pipelined over it in order (a FIFO of futures:
no pool, no lock), a deadline per call watched by one timer, ``AUTH`` and ``SELECT`` on
connect, and a new connection after a failure. Failures raise redis-py's exception types
(``ConnectionError``, ``TimeoutError``, ``ResponseError``), so callers handle them as they
handle redis-py's. :func:`lean_options` says which URLs it serves; every other case stays
on redis-py's asyncio client.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
import redis.exceptions
from redis.connection import parse_url

__all__ = ["RespClient", "RespScript", "lean_options"]

_LEAN_OPTIONS = frozenset(
    {"host", "port", "db", "username", "password", "socket_timeout", "socket_connect_timeout"}
)
_Entry = tuple["asyncio.Future[Any] | None", float]


def lean_options(url: str) -> dict[str, Any] | None:
    """The connection options of ``url`` if :class:`RespClient` can serve it, else ``None``.

    Served: ``redis://`` URLs whose query holds only the timeouts (redis-py parses them).
    Not served: ``rediss://`` (TLS), ``unix://`` and any other option (a RESP3
    ``protocol``, a health check, a client name...): those stay on redis-py.
    """
    if not url.startswith("redis://"):
        return None
    options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    return options if _LEAN_OPTIONS.issuperset(options) else None


def _copy(error: Exception) -> Exception:
    # Each waiting call raises its own exception: one instance raised in many tasks
    # would collect all their tracebacks.
    return type(error)(*error.args)


class _Connection(asyncio.Protocol):
    """One TCP connection: requests written in order, replies matched in order."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.loop = asyncio.get_running_loop()
        self.reader = hiredis.Reader(
            protocolError=redis.exceptions.InvalidResponse,
            replyError=redis.exceptions.ResponseError,
        )
        self.transport: asyncio.Transport | None = None
        self.pending: deque[_Entry] = deque()
        self.failure: Exception | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.closed: asyncio.Future[None] = self.loop.create_future()

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        pending = self.pending
        reader.feed(data)
        try:
            while True:
                reply = reader.gets()
                if reply is False:
                    return
                if not pending:
                    raise redis.exceptions.InvalidResponse(f"unexpected reply from {self.where}")
                future = pending.popleft()[0]
                if future is not None and not future.done():
                    future.set_result(reply)
        except redis.exceptions.InvalidResponse as exc:
            self.fail(redis.exceptions.ConnectionError(f"{self.where}: {exc}"))

    def eof_received(self) -> bool | None:
        self.fail(redis.exceptions.ConnectionError(f"Connection closed by server ({self.where})."))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        detail = f": {exc}" if exc is not None else ""
        self.fail(redis.exceptions.ConnectionError(f"Connection to {self.where} lost{detail}"))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- requests ----------------------------------------------------------------------

    def request(self, packed: bytes, replies: int, timeout: float | None) -> asyncio.Future[Any]:
        """Write ``packed`` (``replies`` commands); the future gets the last reply."""
        future: asyncio.Future[Any] = self.loop.create_future()
        if self.failure is not None:
            future.set_exception(_copy(self.failure))
            return future
        deadline = self.loop.time() + timeout if timeout is not None else float("inf")
        pending = self.pending
        for _ in range(replies - 1):
            pending.append((None, deadline))
        pending.append((future, deadline))
        if self._timer is None and timeout is not None:
            self._timer = self.loop.call_at(deadline, self._check_deadline)
        assert self.transport is not None
        self.transport.write(packed)
        return future

    def _check_deadline(self) -> None:
        # One timer for the whole FIFO: replies come in order, so only the oldest
        # request's deadline matters; a late reply leaves the connection unusable.
        self._timer = None
        if not self.pending or self.failure is not None:
            return
        deadline = self.pending[0][1]
        if self.loop.time() >= deadline:
            self.fail(redis.exceptions.TimeoutError(f"Timeout reading from {self.where}"))
        elif deadline != float("inf"):
            self._timer = self.loop.call_at(deadline, self._check_deadline)

    def fail(self, error: Exception) -> None:
        """Fail every request waiting for a reply with ``error`` and close the connection."""
        if self.failure is None:
            self.failure = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.pending:
            future = self.pending.popleft()[0]
            if future is not None and not future.done():
                future.set_exception(_copy(error))
        if self.transport is not None:
            self.transport.abort()


class RespScript:
    """A Lua script run with ``EVALSHA``, loaded with ``EVAL`` when Redis lacks it (a
    restart, ``SCRIPT FLUSH``). Called like redis-py's registered scripts."""

    def __init__(self, client: RespClient, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        """Run the script with ``keys`` and ``args``; its reply."""
        try:
            return await self.client.call("EVALSHA", self.sha, len(keys), *keys, *args)
        except redis.exceptions.ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.client.call("EVAL", self.source, len(keys), *keys, *args)


class RespClient:
    """Redis over one pipelined connection for the running event loop (see the module).

    ``options`` are :func:`lean_options`' (host, port, db, username, password); a call
    waits at most ``timeout`` seconds for its reply, a connection ``connect_timeout``.
    """

    def __init__(
        self, options: dict[str, Any], *, timeout: float | None, connect_timeout: float | None
    ) -> None:
        self.host: str = options.get("host", "localhost")
        self.port = int(options.get("port", 6379))
        self.db = int(options.get("db", 0))
        self._username: str | None = options.get("username")
        self._password: str | None = options.get("password")
        self.timeout = options.get("socket_timeout", timeout)
        self.connect_timeout = options.get("socket_connect_timeout", connect_timeout)
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"RespClient('{self.host}:{self.port}/{self.db}')"

    def register_script(self, source: str) -> RespScript:
        """A :class:`RespScript` of ``source`` on this client."""
        return RespScript(self, source)

    async def call(self, *args: Any) -> Any:
        """Send one command; its reply (an error reply raised as ``ResponseError``)."""
        connection = self._connection
        if connection is None or connection.failure is not None:
            connection = await self._connect()
        reply = await connection.request(hiredis.pack_command(args), 1, self.timeout)
        if isinstance(reply, redis.exceptions.ResponseError):
            raise reply
        return reply

    async def transaction(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Run ``commands`` in ``MULTI``/``EXEC``, written at once; their replies (the
        first error among them raised)."""
        connection = self._connection
        if connection is None or connection.failure is not None:
            connection = await self._connect()
        packed = b"".join(
            hiredis.pack_command(tuple(command)) for command in (("MULTI",), *commands, ("EXEC",))
        )
        replies = await connection.request(packed, len(commands) + 2, self.timeout)
        if isinstance(replies, redis.exceptions.ResponseError):  # EXECABORT
            raise replies
        for reply in replies:
            if isinstance(reply, redis.exceptions.ResponseError):
                raise reply
        return list(replies)

    async def _connect(self) -> _Connection:
        if self._closed:
            raise redis.exceptions.ConnectionError("the client is closed")
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._open())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, task: asyncio.Task[_Connection]) -> None:
        self._connecting = None
        if not task.cancelled() and task.exception() is None:
            self._connection = task.result()

    async def _open(self) -> _Connection:
        where = f"{self.host}:{self.port}"
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(where), self.host, self.port),
                self.connect_timeout,
            )
        except asyncio.TimeoutError:
            raise redis.exceptions.TimeoutError(f"Timeout connecting to {where}") from None
        except OSError as exc:
            raise redis.exceptions.ConnectionError(f"Error connecting to {where}: {exc}") from exc
        setup: list[tuple[Any, ...]] = []
        if self._username or self._password:  # as redis-py does
            password = self._password or ""
            setup.append(
                ("AUTH", self._username, password) if self._username else ("AUTH", password)
            )
        if self.db:
            setup.append(("SELECT", self.db))
        for command in setup:
            packed = hiredis.pack_command(command)
            try:
                reply = await connection.request(packed, 1, self.connect_timeout)
            except Exception:
                connection.fail(redis.exceptions.ConnectionError(f"{where}: setup failed"))
                raise
            if isinstance(reply, redis.exceptions.ResponseError):
                error = (
                    redis.exceptions.AuthenticationError(f"{where}: {reply}")
                    if command[0] == "AUTH"
                    else redis.exceptions.ConnectionError(f"{where}: {reply}")
                )
                connection.fail(error)
                raise error
        return connection

    async def aclose(self) -> None:
        """Close the connection; calls waiting for a reply fail with ``ConnectionError``."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.fail(redis.exceptions.ConnectionError("the client is closed"))
            await connection.closed
