"""The ``django://`` store: records in the Django project's own database.

``STORE = "django://"`` keeps records in the ``default`` database, ``"django://<alias>"``
in another one of ``DATABASES``; PostgreSQL and SQLite (3.35 or newer) only. The table
comes from this app's migrations (``python manage.py migrate``): nothing creates or alters
a table at run time.

Every operation is raw SQL on Django's connection for the alias, the one the current
thread or request already uses, so a store call inside ``transaction.atomic()`` (or a
``TestCase``) joins that transaction. Confirm and claim are single ``UPDATE ... RETURNING``
statements, as in the SQL store: exactly one process wins a confirmation, and concurrent
claims take disjoint batches (``FOR UPDATE SKIP LOCKED`` on PostgreSQL). The async twin
runs each operation with ``asgiref``'s ``sync_to_async(thread_sensitive=True)``, the way
Django's own async ORM methods do, so under ASGI the confirmation shares the request's
connection, which Django closes when the request ends.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import date
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, connections, transaction

from ..errors import ConfigurationError
from ..insights import (
    CELL_COLUMNS,
    CELL_KEY,
    EPOCH,
    TTC_BUCKETS,
    TTC_COLUMNS,
    UNKNOWN_SENDER,
    Cell,
    cell_from_counts,
    day_number,
    ttc_bucket,
)
from ..lifecycle import ProcessLocal
from ..records import RECORD_FIELDS, Record, State
from ..stores._sqlite import PURGE_BATCH, WriteTurns, purge_in_batches
from ..stores.base import BaseStore, InsightsStore, clip_error_message

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.utils import CursorWrapper

__all__ = ["DAILY_TABLE", "MIN_SQLITE_VERSION", "TABLE", "VENDORS", "DjangoStore"]

logger = logging.getLogger("twilio_feedback.store")

TABLE = "twilio_feedback_record"
"""The table of the ``django://`` store, created by this app's migrations."""
DAILY_TABLE = "twilio_feedback_daily"
"""The conversion insights' counts, one row per (day, country, sender) (migration 0003)."""
VENDORS = ("postgresql", "sqlite")
"""Database vendors the ``django://`` store runs on."""
MIN_SQLITE_VERSION = (3, 35, 0)
"""The first SQLite with ``UPDATE ... RETURNING``."""

_CREATED, _COUNTRY, _SENDER, _SID = (
    RECORD_FIELDS.index(name) for name in ("created_at", "country", "sender", "message_sid")
)
RENEW_BATCH = 400
"""Records renewed per statement: 802 parameters, under every SQLite's limit (999)."""
SQLITE_TIMEOUT = 5.0
"""The seconds a connection to SQLite waits for the write lock unless ``DATABASES``
sets ``OPTIONS["timeout"]`` (Python's own default)."""

_T = TypeVar("_T")
_PENDING = State.PENDING.value
_CONFIRMED = State.CONFIRMED.value


def _record(row: Sequence[Any] | None) -> Record | None:
    if row is None:
        return None
    data = dict(zip(RECORD_FIELDS, row, strict=False))
    data["error_message"] = data["error_message"] or None
    return Record.from_dict(data)


def _records(rows: Sequence[Sequence[Any]]) -> list[Record]:
    return [record for record in map(_record, rows) if record is not None]


def _tally(daily: str, changed: str, column: str, by: int, *, ttc: bool, unsent: bool) -> str:
    """PostgreSQL: a data-modifying CTE ``counted`` that adds ``by`` to ``column`` (and
    with ``ttc``, 1 to the time-to-confirm bucket of ``%s - created_at``: one parameter) in
    the cells of the rows the CTE ``changed`` returns."""
    values = dict.fromkeys(CELL_COLUMNS, "0")
    values[column] = f"COUNT(*) * {by}"
    if ttc:
        for index, name in enumerate(TTC_COLUMNS):
            above = f"delay > {TTC_BUCKETS[index - 1]!r}" if index else "TRUE"
            below = f"delay <= {TTC_BUCKETS[index]!r}" if index < len(TTC_COLUMNS) - 1 else "TRUE"
            values[name] = f"COUNT(*) FILTER (WHERE {above} AND {below})"
    where = "country IS NOT NULL" + (" AND message_sid IS NULL" if unsent else "")
    return (
        f"counted AS (INSERT INTO {daily} ({', '.join((*CELL_KEY, *CELL_COLUMNS))}) "
        f"SELECT day, country, sender, {', '.join(values.values())} FROM ("
        "SELECT CAST(floor(created_at / 86400.0) AS INTEGER) AS day, country, "
        f"COALESCE(NULLIF(sender, ''), '{UNKNOWN_SENDER}') AS sender"
        + (", %s - created_at AS delay" if ttc else "")
        + f" FROM {changed} WHERE {where}) AS cells GROUP BY day, country, sender "
        "ON CONFLICT (day, country, sender) DO UPDATE SET "
        + ", ".join(f"{name} = {daily}.{name} + excluded.{name}" for name in CELL_COLUMNS)
        + ")"
    )


def _statements(vendor: str, table: str, daily: str) -> dict[str, str]:
    """The SQL of each operation, with Django's ``%s`` placeholders."""
    cols = ", ".join(RECORD_FIELDS)
    keep = "CASE WHEN expires_at > %s THEN expires_at ELSE %s END"
    confirm = (
        f"UPDATE {table} SET state = '{_CONFIRMED}', confirmed_at = %s, lease_until = %s, "
        f"expires_at = {keep} "
        f"WHERE tracking_id = %s AND state = '{_PENDING}' AND expires_at > %s "
        f"RETURNING {cols}"
    )
    due = (
        f"SELECT tracking_id FROM {table} WHERE state = '{_CONFIRMED}' "
        "AND message_sid IS NOT NULL AND lease_until <= %s ORDER BY lease_until LIMIT %s"
    )
    if vendor == "postgresql":
        # One round trip whatever the outcome: the losing branch reads the row the loser
        # needs to say why. It locks what it reads (FOR SHARE), so under READ COMMITTED
        # it reads the row's newest committed version: a loser that raced a concurrent
        # winner's commit sees the row confirmed, not pending as the statement's snapshot
        # has it. Nothing is locked when the update won.
        confirm = (
            f"WITH updated AS ({confirm}), "
            + _tally(daily, "updated", "confirmed", 1, ttc=True, unsent=False)
            + f", current AS (SELECT {cols} FROM {table} "
            "WHERE tracking_id = %s AND NOT EXISTS (SELECT 1 FROM updated) FOR SHARE)"
            f" SELECT {cols}, TRUE FROM updated UNION ALL SELECT {cols}, FALSE FROM current"
        )
        # Materialized, so the LIMIT and the row locks are taken once; SKIP LOCKED lets
        # concurrent sweeps take disjoint batches instead of waiting on each other.
        claim = (
            f"WITH picked AS MATERIALIZED ({due} FOR UPDATE SKIP LOCKED) "
            f"UPDATE {table} SET lease_until = %s FROM picked "
            f"WHERE {table}.tracking_id = picked.tracking_id "
            f"RETURNING {', '.join(f'{table}.{c}' for c in RECORD_FIELDS)}"
        )
    else:
        # SQLite has one writer at a time: the subquery and the update cannot interleave,
        # so the update names the picked rows by rowid and nothing else (the outbox's
        # predicates repeated here would have SQLite walk every due row; the tracking id,
        # a search of the primary key's index per row). The outbox index holds the rowid.
        picked = due.replace("SELECT tracking_id", "SELECT rowid", 1)
        claim = f"UPDATE {table} SET lease_until = %s WHERE rowid IN ({picked}) RETURNING {cols}"
    outcome = f"WHERE tracking_id = %s AND message_sid = %s AND state = '{_CONFIRMED}'"
    statements = {
        "add": (
            f"INSERT INTO {table} ({cols}) VALUES ({', '.join(['%s'] * len(RECORD_FIELDS))}) "
            "ON CONFLICT (tracking_id) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in RECORD_FIELDS[1:])
        ),
        "get": f"SELECT {cols} FROM {table} WHERE tracking_id = %s",
        "attach_sid": (
            f"UPDATE {table} SET message_sid = %s, account_sid = %s WHERE tracking_id = %s "
            f"RETURNING {cols}"
        ),
        "delete": f"DELETE FROM {table} WHERE tracking_id = %s",
        "confirm": confirm,
        "claim": claim,
        # Row values IN (VALUES ...): the form both SQLite and PostgreSQL accept.
        "renew": (
            f"UPDATE {table} SET lease_until = CASE WHEN lease_until > %s THEN lease_until "
            f"ELSE %s END WHERE state = '{_CONFIRMED}' AND (tracking_id, message_sid) IN "
            "(VALUES {pairs})"
        ),
        # The reporter's outcomes: "{sets}" is the columns they change, "col = %s, ...".
        "outcome": f"UPDATE {table} SET {{sets}} {outcome}",
        # A batch a statement; concurrent purges (one per process) take disjoint batches
        # on PostgreSQL. Ordered, so that the expiry index is walked from its start (a
        # planner may otherwise scan the table from its first page). On SQLite by rowid,
        # as the claim: the expiry index holds it.
        "purge": (
            f"DELETE FROM {table} WHERE tracking_id IN (SELECT tracking_id FROM {table} "
            "WHERE expires_at <= %s ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED)"
            if vendor == "postgresql"
            else f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} "
            "WHERE expires_at <= %s ORDER BY expires_at LIMIT %s)"
        ),
        "counts": f"SELECT state, COUNT(*) FROM {table} GROUP BY state",
        "list": f"SELECT {cols} FROM {table} WHERE state = %s ORDER BY created_at DESC LIMIT %s",
        "requeue": (
            f"UPDATE {table} SET state = '{_CONFIRMED}', confirmed_at = %s, lease_until = 0, "
            f"attempts = 0, error_code = NULL, error_message = NULL, expires_at = {keep} "
            f"WHERE state = '{State.FAILED.value}'"
        ),
        "cells": (
            f"SELECT {', '.join((*CELL_KEY, *CELL_COLUMNS))} FROM {daily} "
            "WHERE day BETWEEN %s AND %s"
        ),
        "count": (
            f"INSERT INTO {daily} ({', '.join((*CELL_KEY, *CELL_COLUMNS))}) "
            f"VALUES ({', '.join(['%s'] * (len(CELL_KEY) + len(CELL_COLUMNS)))}) "
            "ON CONFLICT (day, country, sender) DO UPDATE SET "
            + ", ".join(f"{name} = {daily}.{name} + excluded.{name}" for name in CELL_COLUMNS)
        ),
    }
    # The changes the insights count, returning the rows they changed.
    for key in ("add", "delete", "outcome", "requeue"):
        statements[f"{key}_returning"] = f"{statements[key]} RETURNING {cols}"
    if vendor == "postgresql":
        # One statement: the count in a data-modifying CTE beside the change.
        counted = {
            "add": ("sent", 1, False),
            "delete": ("sent", -1, True),
            "reported": ("reported", 1, False),
            "failed": ("failed", 1, False),
            "requeue": ("failed", -1, False),
        }
        for name, (column, by, unsent) in counted.items():
            base = "outcome" if name in ("reported", "failed") else name
            statements[f"{name}_counted"] = (
                f"WITH changed AS ({statements[f'{base}_returning']}), "
                + _tally(daily, "changed", column, by, ttc=False, unsent=unsent)
                + f" SELECT {cols} FROM changed"
            )
    return statements


class DjangoStore(ProcessLocal, BaseStore, InsightsStore):
    """A :class:`~twilio_feedback.stores.Store` in the Django project's database.

    ``alias`` names the database in ``DATABASES`` (``django://<alias>`` in a URL). The
    database must be PostgreSQL or SQLite >= 3.35, and have this app's migrations
    applied (``python manage.py migrate``, with ``--database <alias>`` for another
    database than ``default``). Anything else is refused here, with the reason.
    """

    def __init__(self, alias: str = "default") -> None:
        if not settings.configured:
            raise ConfigurationError(
                "the django:// store keeps records in a Django project's database: "
                "configure Django first (DJANGO_SETTINGS_MODULE, or manage.py)"
            )
        if alias not in connections.settings:
            known = ", ".join(repr(name) for name in connections.settings) or "none"
            raise ConfigurationError(
                f"django://{alias}: there is no {alias!r} database in DATABASES "
                f"(databases: {known})"
            )
        connection = connections[alias]
        vendor = connection.vendor
        if vendor not in VENDORS:
            raise ConfigurationError(
                f"django://{alias} is a {connection.display_name} database; the django:// "
                "store runs on PostgreSQL and SQLite. Point it at one of those "
                "(django://<alias>), or use another store (redis://...)"
            )
        if vendor == "sqlite":
            import sqlite3

            if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
                raise ConfigurationError(
                    f"the django:// store needs SQLite {'.'.join(map(str, MIN_SQLITE_VERSION))} "
                    f"or newer (UPDATE ... RETURNING); this Python has {sqlite3.sqlite_version}"
                )
        self.alias = alias
        """The database alias in ``DATABASES``."""
        self.vendor: str = vendor
        """``postgresql`` or ``sqlite``."""
        quote = connection.ops.quote_name
        self._sql = _statements(vendor, quote(TABLE), quote(DAILY_TABLE))
        self.purge_batch = PURGE_BATCH
        """The most expired records :meth:`purge` deletes per statement."""
        self._quote = connection.ops.quote_name
        self._turns: WriteTurns | None = None
        if vendor == "sqlite":
            options = connection.settings_dict.get("OPTIONS") or {}
            self._turns = WriteTurns(float(options.get("timeout", SQLITE_TIMEOUT)))
        super().__init__()

    def _init_state(self) -> None:
        super()._init_state()
        # A forked child forgets the parent's connections without closing them: closing
        # one would end the parent's session on the server.
        self._connections = _ThreadConnections()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> DjangoStore:
        """Build from ``django://`` (the ``default`` database) or ``django://<alias>``."""
        parts = urlsplit(url)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigurationError(
                f"{url!r}: a django:// store URL names a database alias and nothing else "
                "(django:// or django://<alias>)"
            )
        return cls(parts.netloc or "default", **options)

    def __repr__(self) -> str:
        return f"DjangoStore({self.alias!r})"

    # -- execution -------------------------------------------------------------------

    def _writing(
        self, connection: BaseDatabaseWrapper | None = None
    ) -> AbstractContextManager[None]:
        """SQLite: hold this process's write turn on the database file around a write
        (:class:`~twilio_feedback.stores._sqlite.WriteTurns`, shared with the SQL store):
        a writer queued behind another of this process goes in as soon as that one
        commits, instead of sleeping in SQLite's busy handler. Not inside the caller's
        transaction (an ``atomic()`` block, or autocommit off): it is the caller's to end,
        and may already hold SQLite's lock that the writer holding the turn waits for."""
        if connection is None:
            connection = connections[self.alias]
        if self._turns is None or _in_transaction(connection):
            return contextlib.nullcontext()
        return self._turns.held(str(connection.settings_dict["NAME"]))

    def _run(self, work: Callable[[CursorWrapper], _T], *, write: bool = True) -> _T:
        """``work`` on this thread's connection; a ``write`` (the default) on SQLite in
        this process's write turn (:meth:`_writing`)."""
        connection = connections[self.alias]
        if write and self._turns is not None:
            with self._writing(connection):
                return self._attempt(connection, work)
        return self._attempt(connection, work)

    def _attempt(self, connection: BaseDatabaseWrapper, work: Callable[[CursorWrapper], _T]) -> _T:
        self._connections.use(connection)
        was_open = connection.connection is not None
        try:
            with connection.cursor() as cursor:
                return work(cursor)
        except (OperationalError, InterfaceError):
            # The server dropped this thread's connection (a restart, a failover, an idle
            # timeout). Django replaces a broken connection between two requests only,
            # and the reporter's threads serve none: one more try, on a new connection.
            if (
                not was_open
                or connection.in_atomic_block
                or (connection.connection is not None and connection.is_usable())
            ):
                raise
            connection.close()
        with connection.cursor() as cursor:
            return work(cursor)

    def _one(self, sql: str, params: Sequence[Any], *, write: bool = True) -> Any:
        def work(cursor: CursorWrapper) -> Any:
            cursor.execute(sql, params)
            return cursor.fetchone()

        return self._run(work, write=write)

    def _all(self, sql: str, params: Sequence[Any], *, write: bool = True) -> list[Any]:
        def work(cursor: CursorWrapper) -> list[Any]:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

        return self._run(work, write=write)

    def _count(self, sql: str, params: Sequence[Any]) -> int:
        def work(cursor: CursorWrapper) -> int:
            cursor.execute(sql, params)
            return int(cursor.rowcount)

        return self._run(work)

    def _counted(
        self,
        key: str,
        params: Sequence[Any],
        column: str,
        by: int,
        *,
        sql: str | None = None,
        unsent: bool = False,
    ) -> list[Any]:
        """Run the change ``key`` and add ``by`` to ``column`` in the cells of the rows it
        changed (with ``unsent``, of those without a message SID), atomically: on
        PostgreSQL in one statement (``<name>_counted``), on SQLite in one transaction.
        ``sql`` overrides the statement (after its ``{sets}`` are filled in)."""
        if self.vendor == "postgresql":
            return self._all(sql or self._sql[f"{key}_counted"], params)
        statement = sql or self._sql[f"{key}_returning"]

        def work(cursor: CursorWrapper) -> list[Any]:
            with transaction.atomic(using=self.alias):
                cursor.execute(statement, params)
                rows = list(cursor.fetchall())
                counted = [row for row in rows if not unsent or row[_SID] is None]
                self._count_rows(cursor, counted, column, by)
            return rows

        return self._run(work)

    def _count_rows(
        self,
        cursor: CursorWrapper,
        rows: Sequence[Sequence[Any]],
        column: str,
        by: int,
        ttc: float | None = None,
    ) -> None:
        """SQLite: add ``by`` to ``column`` (with ``ttc``, the time of the confirmation,
        1 to its bucket) in the cells of ``rows``, in the caller's transaction."""
        cells: dict[tuple[int, str, str], dict[str, Any]] = {}
        for row in rows:
            if row[_COUNTRY] is None:
                continue
            key = (day_number(row[_CREATED]), row[_COUNTRY], row[_SENDER] or UNKNOWN_SENDER)
            cell = cells.get(key)
            if cell is None:
                cell = cells[key] = dict.fromkeys(CELL_COLUMNS, 0)
            cell[column] += by
            if ttc is not None:
                cell[TTC_COLUMNS[ttc_bucket(ttc - row[_CREATED])]] += 1
        if cells:
            cursor.executemany(
                self._sql["count"],
                [[*key, *(cell[name] for name in CELL_COLUMNS)] for key, cell in cells.items()],
            )

    # -- the Store protocol ----------------------------------------------------------

    def add(self, record: Record) -> None:
        """See :meth:`Store.add`: one upsert (and the count of the send, in the same
        statement or transaction)."""
        values = record.to_dict()
        values["error_message"] = clip_error_message(values["error_message"])
        params = [values[c] for c in RECORD_FIELDS]
        if record.country is None:
            self._count(self._sql["add"], params)
        else:
            self._counted("add", params, "sent", 1)

    def get(self, tracking_id: str) -> Record | None:
        """See :meth:`Store.get`."""
        return _record(self._one(self._sql["get"], [tracking_id], write=False))

    def attach_sid(
        self, tracking_id: str, message_sid: str, account_sid: str | None
    ) -> Record | None:
        """See :meth:`Store.attach_sid`: one statement."""
        return _record(self._one(self._sql["attach_sid"], [message_sid, account_sid, tracking_id]))

    def delete(self, tracking_id: str) -> None:
        """See :meth:`Store.delete`: a record Twilio refused (no message SID) was never
        sent, and its send is uncounted."""
        self._counted("delete", [tracking_id], "sent", -1, unsent=True)

    def confirm(
        self, tracking_id: str, *, now: float, lease_until: float, keep_until: float
    ) -> tuple[bool, Record | None]:
        """See :meth:`Store.confirm`: one statement (on SQLite, a losing confirmation
        reads the row in a second, local one)."""
        params: list[Any] = [now, lease_until, keep_until, keep_until, tracking_id, now]
        if self.vendor == "postgresql":
            # The count of a win is in the same statement (now: its time to confirm).
            row = self._one(self._sql["confirm"], [*params, now, tracking_id])
            if row is None:
                return False, None
            return bool(row[-1]), _record(row[:-1])

        def work(cursor: CursorWrapper) -> Any:
            with transaction.atomic(using=self.alias):
                cursor.execute(self._sql["confirm"], params)
                row = cursor.fetchone()
                if row is not None:
                    self._count_rows(cursor, [row], "confirmed", 1, ttc=now)
            return row

        row = self._run(work)
        if row is not None:
            return True, _record(row)
        return False, self.get(tracking_id)

    def claim(self, *, now: float, lease_until: float, limit: int) -> list[Record]:
        """See :meth:`Store.claim`: one statement."""
        if self.vendor == "postgresql":
            params: list[Any] = [now, limit, lease_until]
        else:
            params = [lease_until, now, limit]
        return _records(self._all(self._sql["claim"], params))

    def renew(self, held: Sequence[tuple[str, str]], *, lease_until: float) -> int:
        """See :meth:`Store.renew`: one statement per 400 records."""
        pairs = [(tracking_id, message_sid) for tracking_id, message_sid in held]
        count = 0
        for first in range(0, len(pairs), RENEW_BATCH):
            batch = pairs[first : first + RENEW_BATCH]
            sql = self._sql["renew"].replace("{pairs}", ", ".join(["(%s, %s)"] * len(batch)))
            count += self._count(sql, [lease_until, lease_until, *(v for p in batch for v in p)])
        return count

    def _outcome(self, tracking_id: str, message_sid: str, changes: Mapping[str, Any]) -> bool:
        # One statement. Column names come from the library's own field names, never from
        # input: quoted all the same.
        quote = self._quote
        sets = ", ".join(f"{quote(name)} = %s" for name in changes)
        values = [v.value if isinstance(v, State) else v for v in changes.values()]
        params = [*values, tracking_id, message_sid]
        state = changes.get("state")
        if state is None:  # defer: counts nothing
            return bool(self._count(self._sql["outcome"].replace("{sets}", sets), params))
        column = "reported" if State(state) is State.REPORTED else "failed"
        key = f"{column}_counted" if self.vendor == "postgresql" else "outcome_returning"
        sql = self._sql[key].replace("{sets}", sets)
        return bool(self._counted("outcome", params, column, 1, sql=sql))

    def purge(self, *, now: float) -> int:
        """See :meth:`Store.purge`: at most :attr:`purge_batch` records a statement (each
        its own transaction, outside ``atomic()``), pausing between two as long as the
        batch took, so that confirmations are not held up behind a long delete. On
        SQLite, as in the SQL store, a batch is sized to hold the write lock about 2 ms,
        and the purge checkpoints the write-ahead log every 250 records, between two
        batches (:func:`~twilio_feedback.stores._sqlite.purge_in_batches`)."""
        sql = self._sql["purge"]

        def delete(limit: int) -> int:
            return self._count(sql, [now, limit])

        return purge_in_batches(
            delete,
            most=self.purge_batch,
            writing=self._writing if self._turns is not None else None,
            checkpoint=self._checkpoint,
        )

    def _checkpoint(self) -> None:
        """SQLite: copy the write-ahead log back to the database file, without blocking
        writers (a passive checkpoint), outside the write turn: otherwise the commit that
        takes the log past 1,000 pages does it, holding the write lock. Not inside the
        caller's transaction (SQLite checkpoints nothing there)."""
        if _in_transaction(connections[self.alias]):
            return

        def work(cursor: CursorWrapper) -> None:
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")

        self._run(work, write=False)

    def counts(self) -> dict[str, int]:
        """See :meth:`Store.counts`."""
        result = {state.value: 0 for state in State}
        for state, count in self._all(self._sql["counts"], [], write=False):
            result[state] = int(count)
        return result

    def close(self) -> None:
        """Close the connections of the threads that used this store and have ended (the
        reporter's, once stopped). A live thread's connection stays Django's to manage."""
        self._connections.close_ended()

    # -- operator commands (AdminStore) ------------------------------------------------

    def list_records(self, state: State, *, limit: int) -> list[Record]:
        """See :meth:`AdminStore.list_records`."""
        rows = self._all(self._sql["list"], [State(state).value, limit], write=False)
        return _records(rows)

    def requeue_failed(self, *, now: float, keep_until: float) -> int:
        """See :meth:`AdminStore.requeue_failed`: one statement."""
        return len(self._counted("requeue", [now, keep_until, keep_until], "failed", -1))

    # -- conversion insights (InsightsStore) -------------------------------------------

    def insight_cells(self, since: date, until: date) -> list[Cell]:
        """See :meth:`InsightsStore.insight_cells`: one range read of the daily table."""
        days = [(since - EPOCH).days, (until - EPOCH).days]
        rows = self._all(self._sql["cells"], days, write=False)
        return [cell_from_counts(row[0], row[1], row[2], row[3:]) for row in rows]

    # -- async -----------------------------------------------------------------------

    def as_async(self) -> AsyncDjangoStore:
        """The async twin: each operation through ``sync_to_async(thread_sensitive=True)``,
        as Django's async ORM methods run theirs."""
        return AsyncDjangoStore(self)


class AsyncDjangoStore:
    """The async twin of :class:`DjangoStore` (see :meth:`DjangoStore.as_async`)."""

    def __init__(self, store: DjangoStore) -> None:
        self.store = store

    async def _run(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        call = functools.partial(fn, *args, **kwargs)
        result: _T = await sync_to_async(call, thread_sensitive=True)()
        return result

    async def add(self, record: Record) -> None:
        """See :meth:`Store.add`."""
        await self._run(self.store.add, record)

    async def get(self, tracking_id: str) -> Record | None:
        """See :meth:`Store.get`."""
        return await self._run(self.store.get, tracking_id)

    async def attach_sid(
        self, tracking_id: str, message_sid: str, account_sid: str | None
    ) -> Record | None:
        """See :meth:`Store.attach_sid`."""
        return await self._run(self.store.attach_sid, tracking_id, message_sid, account_sid)

    async def delete(self, tracking_id: str) -> None:
        """See :meth:`Store.delete`."""
        await self._run(self.store.delete, tracking_id)

    async def confirm(
        self, tracking_id: str, *, now: float, lease_until: float, keep_until: float
    ) -> tuple[bool, Record | None]:
        """See :meth:`Store.confirm`."""
        return await self._run(
            self.store.confirm, tracking_id, now=now, lease_until=lease_until, keep_until=keep_until
        )

    async def aclose(self) -> None:
        """Nothing to release: the connections are Django's (see :meth:`DjangoStore.close`)."""


class _ThreadConnections:
    """The Django connection each thread used last for one store.

    Django closes the connection of a thread that serves requests when each request ends.
    Nothing closes the connection of a thread that serves none (the reporter's, one the
    app started): when the thread ends, its connection would be dropped unclosed, and
    psycopg warns about every one. So the store closes those itself: the first time a
    thread uses the store, and when the store closes, connections of threads that have
    ended are closed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used: dict[int, tuple[threading.Thread, BaseDatabaseWrapper]] = {}

    def use(self, connection: BaseDatabaseWrapper) -> None:
        """Note that this thread uses ``connection``."""
        entry = self._used.get(threading.get_ident())
        if entry is None or entry[1] is not connection:
            self._enter(connection)

    def _enter(self, connection: BaseDatabaseWrapper) -> None:
        thread = threading.current_thread()
        ident = threading.get_ident()
        with self._lock:
            previous = self._used.get(ident)
            self._used[ident] = (thread, connection)
            stale = self._take_ended()
        # The same thread with another connection: a thread that ended left its id to
        # this one, or this thread ran a call in a context that is gone (asyncio's
        # to_thread copies the caller's context, and Django's connections live there).
        if previous is not None and previous[1] is not connection:
            stale.append(previous[1])
        for old in stale:
            _close(old)

    def _take_ended(self) -> list[BaseDatabaseWrapper]:
        ended = [ident for ident, (thread, _) in self._used.items() if not thread.is_alive()]
        return [self._used.pop(ident)[1] for ident in ended]

    def close_ended(self) -> None:
        """Close the connections of threads that have ended."""
        with self._lock:
            stale = self._take_ended()
        for old in stale:
            _close(old)


def _in_transaction(connection: BaseDatabaseWrapper) -> bool:
    """Whether ``connection`` is in a transaction of the caller's."""
    return connection.in_atomic_block or (
        connection.connection is not None and not connection.autocommit
    )


def _close(connection: BaseDatabaseWrapper) -> None:
    if connection.in_atomic_block:
        return
    # Closing from another thread than the connection's own: allowed once it has ended.
    connection.inc_thread_sharing()
    try:
        connection.close()
    except Exception:
        logger.debug(
            "closing a Django connection of an ended thread failed",
            exc_info=True,
            extra={"event": "django_connection_close_failed"},
        )
    finally:
        connection.dec_thread_sharing()
