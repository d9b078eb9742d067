"""Lean Redis connections for the Redis store over hiredis: pipelined asyncio, and blocking.

What a call costs is mostly the client around its one round trip (redis-py: a pool, a
lock, stream readers, a health check, a timeout task per asyncio call). This module keeps
only what the store's few commands need, parsing with ``hiredis.Reader`` and encoding with
``hiredis.pack_command``, with ``AUTH`` and ``SELECT`` on connect and a new connection
after a failure. :class:`RespClient` serves the async twin: one TCP connection per event
loop, an :class:`asyncio.Protocol` over which concurrent calls are pipelined in order (a
FIFO of futures: no pool, no lock), a deadline per call watched by one timer.
:class:`SyncRespClient` serves the sync store: blocking sockets, a connection per call in
progress taken from a list of idle ones (threads share it; a forked child starts its own),
the socket timeout per call. Failures raise redis-py's exception types
(``ConnectionError``, ``TimeoutError``, ``ResponseError``), so callers handle them as they
handle redis-py's. :func:`lean_options` says which URLs they serve; every other case stays
on redis-py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
import redis.exceptions
from redis.connection import parse_url

__all__ = ["RespClient", "RespScript", "SyncRespClient", "SyncRespScript", "lean_options"]

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


def _reader() -> hiredis.Reader:
    # Error replies come back as ResponseError instances (not raised): the caller sees
    # which reply of a transaction failed.
    return hiredis.Reader(
        protocolError=redis.exceptions.InvalidResponse,
        replyError=redis.exceptions.ResponseError,
    )


def _pack_transaction(commands: Sequence[Sequence[Any]]) -> bytes:
    return b"".join(
        hiredis.pack_command(tuple(command)) for command in (("MULTI",), *commands, ("EXEC",))
    )


def _error(reply: redis.exceptions.ResponseError) -> Exception:
    # Redis answers LOADING while it reads its data after a restart: redis-py raises
    # BusyLoadingError, a ConnectionError, and so do these clients.
    if str(reply).startswith("LOADING"):
        return redis.exceptions.BusyLoadingError(str(reply))
    return reply


def _transaction_replies(replies: Any) -> list[Any]:
    if isinstance(replies, redis.exceptions.ResponseError):  # EXECABORT
        raise _error(replies)
    for reply in replies:
        if isinstance(reply, redis.exceptions.ResponseError):
            raise _error(reply)
    return list(replies)


def _setup_error(where: str, command: tuple[Any, ...], reply: Exception) -> Exception:
    if command[0] == "AUTH":
        return redis.exceptions.AuthenticationError(f"{where}: {reply}")
    return redis.exceptions.ConnectionError(f"{where}: {reply}")


def _copy(error: Exception) -> Exception:
    # Each waiting call raises its own exception: one instance raised in many tasks
    # would collect all their tracebacks.
    return type(error)(*error.args)


class _Connection(asyncio.Protocol):
    """One TCP connection: requests written in order, replies matched in order."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.loop = asyncio.get_running_loop()
        self.reader = _reader()
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


class _Script:
    """A Lua script run with ``EVALSHA``, loaded with ``EVAL`` when Redis lacks it (a
    restart, ``SCRIPT FLUSH``). Called like redis-py's registered scripts."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    @staticmethod
    def _noscript(error: redis.exceptions.ResponseError) -> bool:
        return str(error).startswith("NOSCRIPT")


class RespScript(_Script):
    """A script on a :class:`RespClient` (see :class:`_Script`)."""

    def __init__(self, client: RespClient, source: str) -> None:
        super().__init__(source)
        self.client = client

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        """Run the script with ``keys`` and ``args``; its reply."""
        try:
            return await self.client.call("EVALSHA", self.sha, len(keys), *keys, *args)
        except redis.exceptions.ResponseError as exc:
            if not self._noscript(exc):
                raise
        return await self.client.call("EVAL", self.source, len(keys), *keys, *args)


class SyncRespScript(_Script):
    """A script on a :class:`SyncRespClient` (see :class:`_Script`)."""

    def __init__(self, client: SyncRespClient, source: str) -> None:
        super().__init__(source)
        self.client = client

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        """Run the script with ``keys`` and ``args``; its reply."""
        try:
            return self.client.call("EVALSHA", self.sha, len(keys), *keys, *args)
        except redis.exceptions.ResponseError as exc:
            if not self._noscript(exc):
                raise
        return self.client.call("EVAL", self.source, len(keys), *keys, *args)


class _Endpoint:
    """Where and how to connect: :func:`lean_options`' host, port, db, username and
    password; a call waits at most ``timeout`` seconds for its reply, a connection
    ``connect_timeout`` (the URL's ``socket_timeout`` and ``socket_connect_timeout`` win)."""

    def __init__(
        self, options: dict[str, Any], *, timeout: float | None, connect_timeout: float | None
    ) -> None:
        self.host: str = options.get("host", "localhost")
        self.port = int(options.get("port", 6379))
        self.db = int(options.get("db", 0))
        self._username: str | None = options.get("username")
        self._password: str | None = options.get("password")
        self.timeout: float | None = options.get("socket_timeout", timeout)
        self.connect_timeout: float | None = options.get("socket_connect_timeout", connect_timeout)
        self.where = f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.where}/{self.db}')"

    def _setup(self) -> list[tuple[Any, ...]]:
        """The commands a new connection sends first: ``AUTH``, ``SELECT``."""
        setup: list[tuple[Any, ...]] = []
        if self._username or self._password:  # as redis-py does
            password = self._password or ""
            setup.append(
                ("AUTH", self._username, password) if self._username else ("AUTH", password)
            )
        if self.db:
            setup.append(("SELECT", self.db))
        return setup


class RespClient(_Endpoint):
    """Redis over one pipelined connection for the running event loop (see the module and
    :class:`_Endpoint` for the arguments)."""

    def __init__(
        self, options: dict[str, Any], *, timeout: float | None, connect_timeout: float | None
    ) -> None:
        super().__init__(options, timeout=timeout, connect_timeout=connect_timeout)
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False

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
            raise _error(reply)
        return reply

    async def transaction(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Run ``commands`` in ``MULTI``/``EXEC``, written at once; their replies (the
        first error among them raised)."""
        connection = self._connection
        if connection is None or connection.failure is not None:
            connection = await self._connect()
        packed = _pack_transaction(commands)
        replies = await connection.request(packed, len(commands) + 2, self.timeout)
        return _transaction_replies(replies)

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
        where = self.where
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
        for command in self._setup():
            packed = hiredis.pack_command(command)
            try:
                reply = await connection.request(packed, 1, self.connect_timeout)
            except Exception:
                connection.fail(redis.exceptions.ConnectionError(f"{where}: setup failed"))
                raise
            if isinstance(reply, redis.exceptions.ResponseError):
                error = _setup_error(where, command, reply)
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


class _SyncConnection:
    """One blocking TCP connection, used by one call at a time."""

    __slots__ = ("buffer", "reader", "sock", "where")

    def __init__(self, sock: socket.socket, where: str) -> None:
        self.sock = sock
        self.where = where
        self.reader = _reader()
        self.buffer = bytearray(65536)

    def request(self, packed: bytes, replies: int) -> Any:
        """Write ``packed`` (``replies`` commands) and read their replies; the last one.
        Raises redis-py's ``ConnectionError`` or ``TimeoutError``: the connection is then
        unusable (a reply may still come), the caller closes it."""
        sock, reader, buffer = self.sock, self.reader, self.buffer
        try:
            sock.sendall(packed)
            for _ in range(replies):
                reply = reader.gets()
                while reply is False:
                    size = sock.recv_into(buffer)
                    if not size:
                        raise redis.exceptions.ConnectionError(
                            f"Connection closed by server ({self.where})."
                        )
                    reader.feed(cast("bytes", buffer), 0, size)  # hiredis reads any buffer
                    reply = reader.gets()
        except TimeoutError:
            raise redis.exceptions.TimeoutError(f"Timeout reading from {self.where}") from None
        except OSError as exc:
            raise redis.exceptions.ConnectionError(
                f"Error while talking to {self.where}: {exc}"
            ) from exc
        except redis.exceptions.InvalidResponse as exc:
            raise redis.exceptions.ConnectionError(f"{self.where}: {exc}") from exc
        return reply

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    # A store dropped without close() (or a forked child's copy of its parent's
    # connections) closes its sockets quietly, as redis-py's connections do.
    __del__ = close


class SyncRespClient(_Endpoint):
    """Redis over blocking connections (see the module and :class:`_Endpoint` for the
    arguments): a call takes an idle connection or opens one, and gives it back once
    answered. A connection that failed is closed; a call that failed on a connection left
    idle earlier (Redis restarted, or closed it) runs once more on a new one, as redis-py's
    client retries it (the Redis that got it the first time is gone, unless the connection
    broke after Redis ran it)."""

    def __init__(
        self, options: dict[str, Any], *, timeout: float | None, connect_timeout: float | None
    ) -> None:
        super().__init__(options, timeout=timeout, connect_timeout=connect_timeout)
        # list.pop and list.append are atomic: threads share the list without a lock.
        self._idle: list[_SyncConnection] = []
        self._pid = os.getpid()

    def register_script(self, source: str) -> SyncRespScript:
        """A :class:`SyncRespScript` of ``source`` on this client."""
        return SyncRespScript(self, source)

    def call(self, *args: Any) -> Any:
        """Send one command; its reply (an error reply raised as ``ResponseError``)."""
        reply = self._request(hiredis.pack_command(args), 1)
        if isinstance(reply, redis.exceptions.ResponseError):
            raise _error(reply)
        return reply

    def transaction(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Run ``commands`` in ``MULTI``/``EXEC``, written at once; their replies (the
        first error among them raised)."""
        return _transaction_replies(self._request(_pack_transaction(commands), len(commands) + 2))

    def _request(self, packed: bytes, replies: int) -> Any:
        if self._pid != os.getpid():
            # A forked child: the parent's sockets are the parent's (dropped, not closed:
            # the parent may be using them).
            self._idle = []
            self._pid = os.getpid()
        try:
            connection = self._idle.pop()
        except IndexError:
            connection = self._open()
            reused = False
        else:
            reused = True
        try:
            reply = connection.request(packed, replies)
        except redis.exceptions.ConnectionError:
            connection.close()
            if not reused:
                raise
            connection = self._open()
            try:
                reply = connection.request(packed, replies)
            except BaseException:
                connection.close()
                raise
        except BaseException:
            connection.close()
            raise
        self._idle.append(connection)
        return reply

    def _open(self) -> _SyncConnection:
        where = self.where
        try:
            sock = socket.create_connection((self.host, self.port), self.connect_timeout)
        except TimeoutError:
            raise redis.exceptions.TimeoutError(f"Timeout connecting to {where}") from None
        except OSError as exc:
            raise redis.exceptions.ConnectionError(f"Error connecting to {where}: {exc}") from exc
        connection = _SyncConnection(sock, where)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Sent at once, each reply checked in turn: an AUTH refused fails the SELECT too.
            setup = self._setup()
            packed = b"".join(hiredis.pack_command(command) for command in setup)
            for command in setup:
                reply = connection.request(packed, 1)
                packed = b""
                if isinstance(reply, redis.exceptions.ResponseError):
                    raise _setup_error(where, command, reply)
            sock.settimeout(self.timeout)
        except OSError as exc:
            connection.close()
            raise redis.exceptions.ConnectionError(f"Error connecting to {where}: {exc}") from exc
        except BaseException:
            connection.close()
            raise
        return connection

    def close(self) -> None:
        """Close the idle connections (a call in progress closes or keeps its own; a
        later call opens a new one)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
