"""The SQL store's statements run on the driver's own connections (sqlite3, psycopg 3).

Each statement is still written once, in SQLAlchemy Core (``stores.sql``), and compiled once
per dialect here: its text, its parameters' order and defaults, its bind processors. A
call then binds a dict of values and runs ``cursor.execute`` on a pooled DBAPI
connection, which skips what SQLAlchemy's ``Connection.execute`` does on every call
(compiled-cache lookups, parameter and result processing, pool checkout events): about
five times less CPU a statement. Failures come out as SQLAlchemy's own exceptions
(``sqlalchemy.exc.OperationalError``, ...), the DBAPI's as their ``orig``, as before.

The connections are the engine's (made by its pool, so its ``connect`` events run: the
SQLite pragmas), then kept apart in a small pool of this process: a forked child starts
with an empty one and never touches (nor closes) its parent's connections. The engine's
``pool_recycle`` and ``pool_pre_ping`` are honoured; a connection the server dropped
fails once, the idle ones are let go, and the operation is tried again on a fresh one.

The async twin runs the sync operations in threads of the store's (:class:`StoreThread`):
psycopg's ``AsyncConnection`` on the event loop was measured too, and took more CPU a
confirm (asyncio's reader callbacks and futures around each round trip) than a thread
hop to the sync connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..lifecycle import ProcessLocal
from .base import ThreadedAsyncStore

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = [
    "Compiled",
    "RawPool",
    "RawSession",
    "SASession",
    "StoreThread",
    "StoreThreadAsyncStore",
    "raw_driver",
]

_T = TypeVar("_T")
RAW_DRIVERS = ("pysqlite", "psycopg")
"""The drivers whose connections the store uses directly; others go through SQLAlchemy."""
POOL_SIZE = 5
MAX_OVERFLOW = 10
"""SQLAlchemy's defaults, for a pool without them (and an unbounded ``max_overflow``)."""


def raw_driver(engine: Engine) -> bool:
    """Whether the store can run its statements on ``engine``'s DBAPI connections."""
    return engine.dialect.driver in RAW_DRIVERS


def instrumented(engine: Engine) -> bool:
    """Whether someone listens to ``engine``'s statements (``before_cursor_execute`` /
    ``after_cursor_execute``: tracing, query counters): they then go through SQLAlchemy,
    so that the listeners see them."""
    dispatch = engine.dispatch
    return bool(dispatch.before_cursor_execute or dispatch.after_cursor_execute)


class Compiled:
    """One statement compiled for one dialect, ready to bind values and run."""

    __slots__ = (
        "compiled",
        "defaults",
        "expanding",
        "keys",
        "order",
        "positional",
        "processors",
        "sql",
    )

    def __init__(self, statement: Any, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)
        self.compiled = compiled
        binds = compiled.binds
        self.expanding = any(bind.expanding for bind in binds.values())
        self.positional: bool = compiled.positional
        self.keys: tuple[str, ...] | None = None
        self.sql = ""
        self.defaults: dict[str, Any] = {}
        self.order: tuple[str, ...] = ()
        self.processors: tuple[tuple[str, Callable[[Any], Any]], ...] = ()
        if not self.expanding:
            required = {name: None for name, bind in binds.items() if bind.required}
            state = compiled.construct_expanded_state(required)
            self.sql = state.statement
            self.defaults = dict(state.parameters)
            self.order = tuple(state.positiontup or ())
            self.processors = tuple(state.processors.items())

    def bind(self, params: Mapping[str, Any] | None) -> tuple[str, Any]:
        """The SQL text and the driver's parameters (a tuple or a dict) for ``params``."""
        if self.expanding:
            state = self.compiled.construct_expanded_state(params)
            values = dict(state.parameters)
            for name, process in state.processors.items():
                if name in values:
                    values[name] = process(values[name])
            if self.positional:
                return state.statement, tuple([values[name] for name in state.positiontup or ()])
            return state.statement, values
        values = {**self.defaults, **params} if params else dict(self.defaults)
        for name, process in self.processors:
            values[name] = process(values[name])
        if self.positional:
            return self.sql, tuple([values[name] for name in self.order])
        return self.sql, values

    def names(self, description: Sequence[Any]) -> tuple[str, ...]:
        """The result's column names (from the first result's cursor description)."""
        keys = self.keys
        if keys is None:
            keys = self.keys = tuple(column[0] for column in description)
        return keys


class Statements:
    """Every statement's :class:`Compiled` form for one dialect, made on first use.

    For psycopg, in PostgreSQL's own ``$1`` placeholders, run on a ``RawCursor``: psycopg
    then sends the text as it is, where its usual ``%(name)s`` would be parsed on every
    call (psycopg caches the parse of statements under 4 KiB only; a counted confirm is
    longer)."""

    def __init__(self, dialect: Any) -> None:
        if dialect.driver == "psycopg":
            dialect = type(dialect)(paramstyle="numeric_dollar")
        self.dialect = dialect
        self._compiled: dict[int, tuple[Any, Compiled]] = {}

    def __call__(self, statement: Any) -> Compiled:
        found = self._compiled.get(id(statement))
        if found is None:
            # The statement is kept alongside, so that its id is never reused.
            found = self._compiled[id(statement)] = (statement, Compiled(statement, self.dialect))
        return found[1]


class RawSession:
    """The operations' view of one DBAPI cursor: the same four calls as
    :class:`SASession`, so an operation is written once for both."""

    __slots__ = ("compile", "cursor")

    def __init__(self, cursor: Any, compile: Statements) -> None:
        self.cursor = cursor
        self.compile = compile

    def all(self, statement: Any, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The rows ``statement`` returns, as dicts."""
        compiled = self.compile(statement)
        cursor = self.cursor
        cursor.execute(*compiled.bind(params))
        # fetchall, even for one row: SQLite finishes (and, outside a transaction,
        # commits) a statement only once its rows have all been read.
        rows = cursor.fetchall()
        if not rows:
            return []
        keys = compiled.names(cursor.description)
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def first(self, statement: Any, params: Mapping[str, Any] | None = None) -> Any:
        """The first row ``statement`` returns, or ``None``."""
        rows = self.all(statement, params)
        return rows[0] if rows else None

    def rowcount(self, statement: Any, params: Mapping[str, Any] | None = None) -> int:
        """Run ``statement``; how many rows it changed."""
        cursor = self.cursor
        cursor.execute(*self.compile(statement).bind(params))
        return int(cursor.rowcount)

    def many(self, statement: Any, params: Sequence[Mapping[str, Any]]) -> None:
        """Run ``statement`` once per parameter set."""
        compiled = self.compile(statement)
        if len(params) == 1:  # one cell, the usual count: execute is the cheaper call
            self.cursor.execute(*compiled.bind(params[0]))
            return
        bound = [compiled.bind(one) for one in params]
        self.cursor.executemany(bound[0][0], [args for _, args in bound])


class SASession:
    """The operations' view of a SQLAlchemy ``Connection`` (other drivers, instrumented
    engines)."""

    __slots__ = ("conn",)

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def all(self, statement: Any, params: Mapping[str, Any] | None = None) -> list[Any]:
        """The rows ``statement`` returns, as mappings."""
        return list(self.conn.execute(statement, params).mappings().all())

    def first(self, statement: Any, params: Mapping[str, Any] | None = None) -> Any:
        """The first row ``statement`` returns, or ``None``."""
        return self.conn.execute(statement, params).mappings().first()

    def rowcount(self, statement: Any, params: Mapping[str, Any] | None = None) -> int:
        """Run ``statement``; how many rows it changed."""
        return int(self.conn.execute(statement, params).rowcount)

    def many(self, statement: Any, params: Sequence[Mapping[str, Any]]) -> None:
        """Run ``statement`` once per parameter set."""
        self.conn.execute(statement, list(params))


Session = RawSession | SASession


class _Connection:
    __slots__ = ("born", "dbapi", "session")

    def __init__(self, dbapi: Any, compile: Statements) -> None:
        self.dbapi = dbapi
        if compile.dialect.driver == "psycopg":
            import psycopg

            cursor = psycopg.RawCursor(dbapi)
        else:
            cursor = dbapi.cursor()
        self.session = RawSession(cursor, compile)
        self.born = time.monotonic()


class RawPool(ProcessLocal):
    """DBAPI connections of one engine, for this process: the connections are made by
    the engine's pool (its ``connect`` events run) and detached from it.

    It keeps up to the engine's ``pool_size + max_overflow`` idle connections (15 by
    default), the most its pool would hold open at once: the store's async threads (one
    per ``pool_size``) and the reporter's (its workers, scheduler and heartbeat) may all
    hold one at the same time, and each connection a burst had to open and then close
    would be a new server session for the next (on PostgreSQL a process forked, and
    milliseconds of handshake)."""

    def __init__(self, engine: Engine, statements: Statements) -> None:
        self.engine = engine
        self.statements = statements
        self.dialect = engine.dialect
        self.sqlite = self.dialect.name == "sqlite"
        pool: Any = engine.pool
        size = pool.size() if hasattr(pool, "size") else POOL_SIZE
        self.size = max(1, int(size))
        """The engine's ``pool_size``: how many threads the async twin runs."""
        overflow = int(getattr(pool, "_max_overflow", MAX_OVERFLOW))
        self.keep = self.size + (overflow if overflow >= 0 else MAX_OVERFLOW)
        """The most idle connections kept (``pool_size + max_overflow``)."""
        self.recycle = float(getattr(pool, "_recycle", -1))
        self.pre_ping = bool(getattr(pool, "_pre_ping", False))
        self.hide_parameters = bool(getattr(engine, "hide_parameters", False))
        self.error: type[Exception] = self.dialect.loaded_dbapi.Error
        super().__init__()

    def _init_state(self) -> None:
        super()._init_state()
        # A forked child forgets its parent's connections without closing them: closing
        # would end the parent's sessions (PostgreSQL) or touch its locks (SQLite).
        self._idle: collections.deque[_Connection] = collections.deque()

    def _connect(self) -> _Connection:
        try:
            fairy = self.engine.raw_connection()
        except self.error as exc:  # the pool raises the driver's own
            raise self.translate(exc, False) from exc
        dbapi: Any = fairy.dbapi_connection
        fairy.detach()
        if self.sqlite:
            # Autocommit: a one-statement operation is its own transaction; an operation of
            # several statements says BEGIN IMMEDIATE itself.
            dbapi.isolation_level = None
        else:
            dbapi.autocommit = True
        return _Connection(dbapi, self.statements)

    def _checkout(self) -> _Connection:
        try:
            conn = self._idle.pop()
        except IndexError:
            return self._connect()
        if self.recycle >= 0 and time.monotonic() - conn.born > self.recycle:
            self._close(conn)
            return self._connect()
        if self.pre_ping and not self.dialect.do_ping(conn.dbapi):
            self._close(conn)
            return self._connect()
        return conn

    def _checkin(self, conn: _Connection) -> None:
        if len(self._idle) < self.keep:
            self._idle.append(conn)
        else:
            self._close(conn)

    def _close(self, conn: _Connection) -> None:
        with contextlib.suppress(Exception):  # a dropped connection may fail to close
            conn.dbapi.close()

    def dispose(self) -> None:
        """Close the idle connections (this process's)."""
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:
                return
            self._close(conn)

    def run(self, work: Callable[[RawSession], _T], *, transaction: bool = False) -> _T:
        """``work`` on a pooled connection; with ``transaction`` (SQLite), inside
        ``BEGIN IMMEDIATE ... COMMIT``. A dropped connection is retried once."""
        try:
            return self._run_once(work, transaction)
        except _Lost:
            # The server dropped a pooled connection (a restart, a failover): the idle ones
            # went with it. One more try, on a fresh connection.
            self.dispose()
        try:
            return self._run_once(work, transaction)
        except _Lost as lost:
            raise lost.error from lost.__cause__

    def _run_once(self, work: Callable[[RawSession], _T], transaction: bool) -> _T:
        conn = self._checkout()
        cursor = conn.session.cursor
        try:
            if transaction:
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    result = work(conn.session)
                    cursor.execute("COMMIT")
                except BaseException:
                    if conn.dbapi.in_transaction:
                        conn.dbapi.rollback()
                    raise
            else:
                result = work(conn.session)
        except self.error as exc:
            lost = self.dialect.is_disconnect(exc, conn.dbapi, cursor)  # type: ignore[arg-type]
            if lost:
                self._close(conn)
            else:
                self._checkin(conn)
            error = self.translate(exc, lost)
            if lost:
                raise _Lost(error) from exc
            raise error from exc
        except BaseException:
            self._close(conn)  # in an unknown state
            raise
        self._checkin(conn)
        return result

    def translate(self, exc: Exception, lost: bool) -> Exception:
        """The SQLAlchemy exception SQLAlchemy would have raised for the DBAPI's ``exc``."""
        from sqlalchemy import exc as sa_exc

        error: Exception = sa_exc.DBAPIError.instance(
            None,
            None,
            exc,
            self.error,
            hide_parameters=self.hide_parameters,
            connection_invalidated=lost,
            dialect=self.dialect,
        )
        return error


class _Lost(Exception):
    """A connection the server dropped, with the error to raise if a retry fails too."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


# -- async -------------------------------------------------------------------------------


class StoreThread(ProcessLocal):
    """Threads of a store's own that run its calls for async callers, fed by one queue:
    less CPU a call than ``asyncio.to_thread`` (no executor, no ``concurrent.futures``
    hand-over). Like ``asyncio.to_thread``, a call runs in a copy of the caller's
    context (its contextvars: a tracing span, a request's id), and like an executor's
    threads they run only what a caller awaits: started on first use (again in a forked
    child), idle otherwise, ended by :meth:`stop`."""

    def __init__(self, count: int = 1) -> None:
        self.count = max(1, count)
        super().__init__()

    def _init_state(self) -> None:
        super()._init_state()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    async def call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``fn(*args, **kwargs)`` in one of the threads; its result or exception."""
        calls = self._queue if self._threads else self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        calls.put((contextvars.copy_context(), loop, future, fn, args, kwargs))
        return await future

    def _start(self) -> queue.SimpleQueue[Any]:
        with self._lock:
            if not self._threads:
                for _ in range(self.count):
                    thread = threading.Thread(
                        target=self._serve,
                        args=(self._queue,),
                        name="twilio-feedback-sql",
                        daemon=True,
                    )
                    thread.start()
                    self._threads.append(thread)
            return self._queue

    @staticmethod
    def _serve(calls: queue.SimpleQueue[Any]) -> None:
        while True:
            item = calls.get()
            if item is None:
                return
            context, loop, future, fn, args, kwargs = item
            outcome: tuple[Any, BaseException | None]
            try:
                outcome = (context.run(fn, *args, **kwargs), None)
            except BaseException as exc:
                outcome = (None, exc)
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed
                loop.call_soon_threadsafe(_settle, future, *outcome)

    def stop(self, timeout: float = 1.0) -> None:
        """End the threads once the calls queued before are done (waiting ``timeout``
        seconds at most for each)."""
        with self._lock:
            threads, calls = self._threads, self._queue
            self._threads, self._queue = [], queue.SimpleQueue()
        for _ in threads:
            calls.put(None)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class StoreThreadAsyncStore(ThreadedAsyncStore):
    """The async twin of a :class:`~twilio_feedback.stores.sql.SQLStore`: the sync
    operations, off the event loop, in the store's :class:`StoreThread`."""

    def __init__(self, store: Any, thread: StoreThread) -> None:
        super().__init__(store)
        self._thread = thread

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await self._thread.call(fn, *args, **kwargs)
