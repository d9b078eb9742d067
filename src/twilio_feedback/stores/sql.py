"""SQL store on SQLAlchemy Core: SQLite (file, WAL) and PostgreSQL (psycopg 3).

One table, created on first use, with its schema version in a small ``<table>_meta``
table. Confirm and claim are single ``UPDATE ... RETURNING`` statements, so exactly one
process wins a confirmation and a claim, whatever the number of processes and hosts. On
PostgreSQL a confirmation is one round trip whatever its outcome (a data-modifying CTE
also returns the row a loser needs to say why); on SQLite a losing confirmation reads the
row in a second, local statement. The conversion insights' counts are rows of
``<table>_daily``, upserted in the same statement (PostgreSQL) or transaction (SQLite) as
the change they count.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import date
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigurationError, MissingDependencyError
from ..insights import CELL_COLUMNS as _CELL
from ..insights import CELL_KEY as _KEY
from ..insights import (
    EPOCH,
    MAX_SENDER_LENGTH,
    TTC_BUCKETS,
    UNKNOWN_SENDER,
    Cell,
    cell_from_counts,
    day_number,
    ttc_bucket,
)
from ..insights import TTC_COLUMNS as _TTC
from ..records import RECORD_FIELDS as _COLUMNS
from ..records import Record, State
from ..settings import redact_url
from ._sqlite import PURGE_BATCH, WriteTurns, purge_in_batches
from ._sqlraw import (
    RawPool,
    SASession,
    Session,
    Statements,
    StoreThread,
    StoreThreadAsyncStore,
    instrumented,
    raw_driver,
)
from .base import (
    ERROR_MESSAGE_LENGTH,
    AsyncStore,
    BaseStore,
    InsightsStore,
    ThreadedAsyncStore,
    clip_error_message,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine, Table

__all__ = ["DIALECTS", "SCHEMA_VERSION", "SQLStore", "normalize_url"]

SCHEMA_VERSION = 3
"""Version of the table layout, kept in ``<table>_meta``; a newer one is refused, an
older one upgraded in place (:meth:`SQLStore.create`).

- 1: the outbox index on ``(state, lease_until)``, over every row.
- 2: the outbox index ``<table>_due`` on ``lease_until``, partial: only ``confirmed``
  rows (what waits to be reported), so pending, reported and failed rows cost no index
  entry.
- 3: the records' ``country`` and ``sender`` (``NULL`` when insights are off), and the
  insights' counts in ``<table>_daily``, one row per (day, country, sender).
"""

_T = TypeVar("_T")
RENEW_BATCH = 500
"""Records renewed per statement: 1,000 parameters, under every SQLite's limit."""


def _sqlalchemy() -> Any:
    try:
        import sqlalchemy
    except ImportError:
        raise MissingDependencyError("sqlalchemy", "sql", "the SQL store") from None
    return sqlalchemy


def normalize_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` use psycopg 3 (SQLAlchemy would pick psycopg2)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _row(row: Mapping[str, Any] | None) -> Record | None:
    if row is None:
        return None
    data = {name: row[name] for name in _COLUMNS}
    data["error_message"] = data["error_message"] or None
    return Record.from_dict(data)


def _rows(rows: Any) -> list[Record]:
    return [record for record in (_row(row) for row in rows) if record is not None]


def _execute(statement: Any, params: Mapping[str, Any], conn: Connection) -> Any:
    return conn.execute(statement, params)


def _rowcount(statement: Any, params: Mapping[str, Any], s: Session) -> int:
    return s.rowcount(statement, params)


class SQLStore(BaseStore, InsightsStore):
    """A :class:`~twilio_feedback.stores.Store` in one SQL table, on SQLite or PostgreSQL.

    Pass a URL (``sqlite:///feedback.db``, ``postgresql://user@host/db``) or an existing
    SQLAlchemy ``Engine`` to share your app's pool (the store then never disposes of it).
    ``table`` names the table (in a URL: ``?table=name``); the table is created on first
    use unless ``create=False``. ``connect_timeout`` bounds how long a request waits for a
    database that is down (in a PostgreSQL URL, ``?connect_timeout=`` wins);
    ``busy_timeout`` how long an SQLite writer queues behind another process.
    ``engine_options`` go to :func:`sqlalchemy.create_engine` (``pool_size``, ...). On
    SQLite, the store's connections run in WAL mode with that busy timeout (a shared
    engine's too). ``purge_batch`` is the most expired records :meth:`purge` deletes per
    transaction.

    Every operation is one statement: :meth:`add` an upsert, :meth:`confirm` and
    :meth:`claim` an ``UPDATE ... RETURNING`` (on PostgreSQL a confirmation is one round
    trip whatever its outcome; on SQLite a losing one reads the row in a second, local
    statement), each outcome and :meth:`requeue_failed` a conditional ``UPDATE``;
    :meth:`renew` takes one per 500 records held. A change the insights count
    (:class:`~twilio_feedback.stores.InsightsStore`) upserts its row of ``<table>_daily``
    in the same statement on PostgreSQL, in the same transaction on SQLite. These run on
    the driver's own connections (sqlite3, psycopg), compiled once, rather than through
    SQLAlchemy's ``Connection.execute`` each time (which other drivers, and engines with
    statement listeners, keep); the async twin runs them in threads of the store's
    (:meth:`as_async`). Expired records stay until :meth:`purge` deletes
    them, ``purge_batch`` at most a transaction, pausing between two as long as a batch
    took: a purge of a million records never holds SQLite's one write lock (or a
    PostgreSQL server's attention) for more than a few milliseconds at a time, so
    confirmations go on meanwhile. On SQLite the writers of one process to one file take
    turns on a lock, so that one waiting for another's transaction goes in as soon as it
    commits (writers in other processes wait in SQLite's busy handler).
    """

    def __init__(
        self,
        url_or_engine: str | Engine,
        *,
        table: str = "twilio_feedback_records",
        connect_timeout: float = 2.0,
        busy_timeout: float = 5.0,
        create: bool = True,
        engine_options: Mapping[str, Any] | None = None,
        purge_batch: int = PURGE_BATCH,
    ) -> None:
        sa = _sqlalchemy()
        if purge_batch < 1:
            raise ConfigurationError(f"purge_batch must be at least 1, not {purge_batch}")
        self.purge_batch = purge_batch
        """The most expired records :meth:`purge` deletes per transaction."""
        self._sa = sa
        if isinstance(url_or_engine, str):
            url = sa.engine.make_url(normalize_url(url_or_engine))
            _check_dialect(url.get_backend_name())
            table = url.query.get("table", table)
            url = url.difference_update_query(["table"])
            self.engine: Engine = _create_engine(
                sa, url, connect_timeout, busy_timeout, dict(engine_options or {})
            )
            self._owns_engine = True
        else:
            _check_dialect(url_or_engine.dialect.name)
            self.engine = url_or_engine
            self._owns_engine = False
        self.dialect = self.engine.dialect.name
        self._busy_timeout = busy_timeout
        self._write_key: str | None = None
        self._turns = WriteTurns(busy_timeout)
        if self.dialect == "sqlite":
            # SQLite is in process (no round trips) and faster in its own transactions.
            self._connect: Callable[[], Any] = self.engine.begin
            sa.event.listen(self.engine, "connect", _sqlite_pragmas(busy_timeout))
            self._write_key = self.engine.url.database or ""
        else:
            # Every operation is one statement, atomic by itself: on a server, autocommit
            # spares the BEGIN and COMMIT round trips a transaction would add to each one.
            self._connect = self.engine.execution_options(isolation_level="AUTOCOMMIT").connect
        metadata = sa.MetaData()
        self.table: Table = sa.Table(
            table,
            metadata,
            sa.Column("tracking_id", sa.String(64), primary_key=True),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("message_sid", sa.String(34)),
            sa.Column("account_sid", sa.String(34)),
            sa.Column("expires_at", sa.Float, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False, default=0.0),
            sa.Column("confirmed_at", sa.Float),
            sa.Column("lease_until", sa.Float, nullable=False, default=0.0),
            sa.Column("attempts", sa.Integer, nullable=False, default=0),
            sa.Column("error_code", sa.Integer),
            sa.Column("error_message", sa.String(ERROR_MESSAGE_LENGTH)),
            sa.Column("country", sa.String(2)),
            sa.Column("sender", sa.String(MAX_SENDER_LENGTH)),
            sa.Index(f"{table}_expiry", "expires_at"),
            comment=f"twilio-feedback schema {SCHEMA_VERSION}",
        )
        # Literal, not a bound parameter, wherever the outbox is read: a planner proves a
        # query may use a partial index from the query's constants only.
        self._confirmed = self.table.c.state == sa.literal_column(f"'{State.CONFIRMED.value}'")
        sa.Index(
            f"{table}_due",
            self.table.c.lease_until,
            postgresql_where=self._confirmed,
            sqlite_where=self._confirmed,
        )
        self.meta: Table = sa.Table(
            f"{table}_meta",
            metadata,
            sa.Column("key", sa.String(32), primary_key=True),
            sa.Column("value", sa.String(64), nullable=False),
        )
        self.daily: Table = sa.Table(
            f"{table}_daily",
            metadata,
            sa.Column("day", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("country", sa.String(2), primary_key=True),
            sa.Column("sender", sa.String(MAX_SENDER_LENGTH), primary_key=True),
            *(sa.Column(name, sa.Integer, nullable=False, default=0) for name in _CELL),
        )
        self._sql = self._statements(sa)
        self._sql.update(self._lookups(sa))
        self._prepared: dict[Hashable, Any] = {}
        self._statements_raw = Statements(self.engine.dialect)
        self._raw: RawPool | None = None
        if raw_driver(self.engine):
            self._raw = RawPool(self.engine, self._statements_raw)
        threads = 1 if self.dialect == "sqlite" or self._raw is None else self._raw.size
        self._threads = StoreThread(threads)
        self._created = not create
        self._create_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLStore:
        """Build from a ``sqlite:///path.db`` or ``postgresql://`` URL."""
        return cls(url, **options)

    def __repr__(self) -> str:
        url = redact_url(self.engine.url.render_as_string(hide_password=False))
        return f"SQLStore({url!r}, table={self.table.name!r})"

    # -- schema ----------------------------------------------------------------------

    def create(self) -> None:
        """Create the tables if they are missing, and record (or check) the schema version.

        Runs by itself on first use; safe to run from several processes at once.
        """
        sa = self._sa
        try:
            self._create_tables()
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
            # PostgreSQL: another process created them between our check and our CREATE.
            self._create_tables()
        with self.engine.begin() as conn:
            values = {"key": "schema_version", "value": str(SCHEMA_VERSION)}
            conn.execute(self._insert(self.meta).values(values).on_conflict_do_nothing())
            found = self._version(conn)
        if found > SCHEMA_VERSION:
            raise ConfigurationError(
                f"table {self.table.name} has schema version {found}, newer than this "
                f"twilio-feedback understands ({SCHEMA_VERSION}): upgrade twilio-feedback"
            )
        if found < SCHEMA_VERSION:
            self._upgrade()
        self._created = True

    def _version(self, conn: Connection) -> int:
        sa = self._sa
        meta = self.meta
        found = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
        return SCHEMA_VERSION if found is None else int(found)

    def _upgrade(self) -> None:
        """Bring a table of an older schema to :data:`SCHEMA_VERSION`, in place, in one
        transaction that processes starting at once take in turns (the first upgrades,
        the others find it done). From 1: the outbox index becomes partial (built while
        the table refuses writes: about a second per million records on PostgreSQL). From
        1 and 2: the ``country`` and ``sender`` columns are added, ``NULL`` in the records
        there (no rewrite of the table, on either database); ``<table>_daily`` is created
        with the other missing tables."""
        from sqlalchemy.schema import CreateIndex, SetTableComment

        sa = self._sa
        name = self.table.name
        due = next(ix for ix in self.table.indexes if ix.name == f"{name}_due")
        with self._upgrade_transaction() as conn:
            found = self._version(conn)
            if found >= SCHEMA_VERSION:
                return
            steps: list[Any] = []
            if found < 2:
                steps += [
                    sa.text(f"DROP INDEX IF EXISTS {self._quoted(f'{name}_outbox')}"),
                    CreateIndex(due, if_not_exists=True),
                ]
            if found < 3:
                dialect = self.engine.dialect
                for column in (self.table.c.country, self.table.c.sender):
                    kind = column.type.compile(dialect=dialect)
                    steps.append(
                        sa.text(
                            f"ALTER TABLE {self._quoted(name)} "
                            f"ADD COLUMN {self._quoted(column.name)} {kind}"
                        )
                    )
            if self.dialect == "postgresql":
                steps.append(SetTableComment(self.table))
            for step in steps:
                conn.execute(step)
            conn.execute(
                self.meta.update()
                .where(self.meta.c.key == "schema_version")
                .values(value=str(SCHEMA_VERSION))
            )

    def _quoted(self, name: str) -> str:
        quoted: str = self.engine.dialect.identifier_preparer.quote(name)
        return quoted

    @contextlib.contextmanager
    def _upgrade_transaction(self) -> Iterator[Connection]:
        if self.dialect == "postgresql":
            with self.engine.begin() as conn:
                conn.execute(
                    self._sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
                    {"name": f"twilio_feedback.create:{self.table.name}"},
                )
                yield conn
            return
        # SQLite: take the write lock before reading the version (BEGIN IMMEDIATE), or a
        # process that read it before another's upgrade committed could not write.
        with self.engine.connect() as conn:
            driver = conn.connection.driver_connection
            level = driver.isolation_level  # type: ignore[union-attr]
            driver.isolation_level = None  # type: ignore[union-attr]
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.exec_driver_sql("ROLLBACK")
                    raise
                conn.exec_driver_sql("COMMIT")
            finally:
                driver.isolation_level = level  # type: ignore[union-attr]

    def _create_tables(self) -> None:
        from sqlalchemy.schema import CreateIndex, CreateTable, SetTableComment

        dialect = self.engine.dialect
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # Processes starting at once would otherwise deadlock on the new table's
                # locks (CREATE INDEX and COMMENT each take one): take turns instead.
                conn.execute(
                    self._sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
                    {"name": f"twilio_feedback.create:{self.table.name}"},
                )
            for table in (self.table, self.meta, self.daily):
                if dialect.has_table(conn, table.name):
                    continue
                conn.execute(CreateTable(table, if_not_exists=True))
                for index in sorted(table.indexes, key=lambda index: str(index.name)):
                    conn.execute(CreateIndex(index, if_not_exists=True))
                if table.comment and dialect.supports_comments and not dialect.inline_comments:
                    conn.execute(SetTableComment(table))

    def _ensure_created(self) -> None:
        if self._created:
            return
        with self._create_lock:
            if not self._created:
                self.create()

    def _insert(self, table: Table) -> Any:
        """An ``INSERT`` that can say ``ON CONFLICT`` (both dialects spell it alike)."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(table)
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)

    def _statements(self, sa: Any) -> dict[str, Any]:
        t = self.table
        c = t.c
        p = sa.bindparam
        pending = State.PENDING.value
        confirmed = State.CONFIRMED.value
        confirm = (
            t.update()
            .where(c.tracking_id == p("id"), c.state == pending, c.expires_at > p("now"))
            .values(
                state=confirmed,
                confirmed_at=p("now"),
                lease_until=p("lease"),
                expires_at=sa.case((c.expires_at > p("keep"), c.expires_at), else_=p("keep")),
            )
            .returning(*t.c)
        )
        if self.dialect == "postgresql":
            # The losing branch locks the row it reads (FOR SHARE): under READ COMMITTED
            # a locking read follows the row to its newest committed version, so a loser
            # whose snapshot predates a concurrent winner's commit still reads the row as
            # the winner left it (confirmed), not the statement's snapshot (pending). The
            # lock is taken only when nothing was updated: a winner writes nothing more.
            updated = confirm.cte("updated")
            current = (
                sa.select(*t.c)
                .where(c.tracking_id == p("id"), ~sa.exists(sa.select(updated.c.tracking_id)))
                .with_for_update(read=True)
                .cte("current")
            )
            won = sa.select(*updated.c, sa.literal(True).label("won"))
            lost = sa.select(*current.c, sa.literal(False).label("won"))
            # The winner's count, in the same statement (one round trip still).
            confirm = sa.union_all(won, lost).add_cte(
                self._tally(updated, "confirmed", 1, ttc=True)
            )
        candidates = (
            sa.select(c.tracking_id)
            .where(self._confirmed, c.message_sid.is_not(None), c.lease_until <= p("now"))
            .order_by(c.lease_until)
            .limit(p("limit"))
        )
        if self.dialect == "postgresql":
            # Materialized, so the LIMIT and the row locks are taken once; SKIP LOCKED lets
            # concurrent sweeps take disjoint batches instead of waiting on each other.
            picked = (
                candidates.with_for_update(skip_locked=True)
                .cte("picked")
                .prefix_with("MATERIALIZED")
            )
            claim = (
                t.update()
                .where(c.tracking_id == picked.c.tracking_id)
                .values(lease_until=p("lease"))
                .returning(*t.c)
            )
        else:
            # SQLite has one writer at a time: the subquery and the update cannot interleave,
            # so the update names the picked rows by rowid and nothing else (the outbox's
            # predicates repeated here would have SQLite walk every due row; the tracking
            # id, a search of the primary key's index per row, its own random page in a
            # large table). The outbox index holds the rowid.
            rowid = sa.literal_column("rowid")
            picked_rows = candidates.with_only_columns(rowid).scalar_subquery()
            claim = (
                t.update()
                .where(rowid.in_(picked_rows))
                .values(lease_until=p("lease"))
                .returning(*t.c)
            )
        requeue = (
            t.update()
            .where(c.state == State.FAILED.value)
            .values(
                state=confirmed,
                confirmed_at=p("now"),
                lease_until=0.0,
                attempts=0,
                error_code=None,
                error_message=None,
                expires_at=sa.case((c.expires_at > p("keep"), c.expires_at), else_=p("keep")),
            )
        )
        # Row values (tracking_id, message_sid) IN (...): SQLite and PostgreSQL both have them.
        renew = (
            t.update()
            .where(
                c.state == confirmed,
                sa.tuple_(c.tracking_id, c.message_sid).in_(p("held", expanding=True)),
            )
            .values(
                lease_until=sa.case((c.lease_until > p("lease"), c.lease_until), else_=p("lease"))
            )
        )
        # Ordered, so that the expiry index is walked from its start: unordered, a planner
        # may scan the table from its first page for rows that expired at its end.
        expired = (
            sa.select(c.tracking_id)
            .where(c.expires_at <= p("now"))
            .order_by(c.expires_at)
            .limit(p("limit"))
        )
        if self.dialect == "postgresql":
            # Concurrent purges (one per process) take disjoint batches.
            expired = expired.with_for_update(skip_locked=True)
            purge = t.delete().where(c.tracking_id.in_(expired.scalar_subquery()))
        else:
            # By rowid, as the claim: the expiry index holds it.
            rowid = sa.literal_column("rowid")
            purge = t.delete().where(rowid.in_(expired.with_only_columns(rowid).scalar_subquery()))
        add = self._insert(t).values({name: p(name) for name in _COLUMNS})
        add = add.on_conflict_do_update(
            index_elements=[c.tracking_id],
            set_={name: add.excluded[name] for name in _COLUMNS if name != "tracking_id"},
        )
        d = self.daily
        count = self._insert(d).values({name: p(name) for name in (*_KEY, *_CELL)})
        count = count.on_conflict_do_update(
            index_elements=[d.c[name] for name in _KEY],
            set_={name: d.c[name] + count.excluded[name] for name in _CELL},
        )
        return {
            "add": add,
            "count": count,
            "confirm": confirm,
            "claim": claim,
            "renew": renew,
            "requeue": requeue,
            "purge": purge,
        }

    def _lookups(self, sa: Any) -> dict[str, Any]:
        """The statements of :meth:`get` and :meth:`attach_sid`, built once like the rest."""
        t = self.table
        c = t.c
        p = sa.bindparam
        return {
            "get": sa.select(t).where(c.tracking_id == p("id")),
            "attach_sid": t.update()
            .where(c.tracking_id == p("id"))
            .values(message_sid=p("sid"), account_sid=p("account"))
            .returning(*t.c),
        }

    def _tally(
        self, changed: Any, column: str, by: int, *, ttc: bool = False, where: Any = None
    ) -> Any:
        """PostgreSQL: a data-modifying CTE that adds ``by`` to ``column`` (and, with
        ``ttc``, 1 to the time-to-confirm bucket of ``:now - created_at``) in the cells of
        the rows the CTE ``changed`` returns, one upsert per cell."""
        sa = self._sa
        d = self.daily
        lit = sa.literal_column
        rows = changed.c
        picked: list[Any] = [
            sa.cast(sa.func.floor(rows.created_at / lit("86400.0")), sa.Integer).label("day"),
            rows.country,
            sa.func.coalesce(
                sa.func.nullif(rows.sender, lit("''")), lit(f"'{UNKNOWN_SENDER}'")
            ).label("sender"),
        ]
        if ttc:
            delay = sa.bindparam("now") - rows.created_at
            picked.append(
                sa.case(
                    *(
                        (delay <= lit(repr(bound)), lit(str(index)))
                        for index, bound in enumerate(TTC_BUCKETS[:-1])
                    ),
                    else_=lit(str(len(TTC_BUCKETS) - 1)),
                ).label("bucket")
            )
        counted = (
            sa.select(*picked)
            .where(rows.country.is_not(None), *(() if where is None else (where,)))
            .subquery("counted")
        )
        values: dict[str, Any] = {name: lit("0") for name in _CELL}
        values[column] = sa.func.count() * lit(str(by))
        if ttc:
            for index, name in enumerate(_TTC):
                values[name] = sa.func.count().filter(counted.c.bucket == lit(str(index)))
        key = [counted.c[name] for name in _KEY]
        cells = sa.select(*key, *values.values()).group_by(*key)
        upsert = self._insert(d).from_select([*_KEY, *values], cells)
        upsert = upsert.on_conflict_do_update(
            index_elements=[d.c[name] for name in _KEY],
            set_={name: d.c[name] + upsert.excluded[name] for name in _CELL},
        )
        return upsert.cte(f"counted_{column}")

    def _counted(
        self,
        key: Hashable,
        build: Callable[[], Any],
        column: str,
        by: int,
        *,
        unsent: bool = False,
        params: Mapping[str, Any] | None = None,
    ) -> list[Any]:
        """Run the statement ``build()`` makes (``... RETURNING`` the rows it changed,
        built once per ``key``) and add ``by`` to ``column`` in their cells (with
        ``unsent``, of those without a message SID only), atomically: on PostgreSQL in the
        same statement, on SQLite in the same transaction. Returns the changed rows."""
        statement = self._prepared.get(key)
        if statement is None:
            statement = build()
            if self.dialect == "postgresql":
                changed = statement.cte("changed")
                where = changed.c.message_sid.is_(None) if unsent else None
                tally = self._tally(changed, column, by, where=where)
                statement = self._sa.select(*changed.c).add_cte(tally)
            self._prepared[key] = statement
        if self.dialect == "postgresql":
            return self._call(lambda s: s.all(statement, params))

        def work(s: Session) -> list[Any]:
            rows = s.all(statement, params)
            counted = [row for row in rows if not unsent or row["message_sid"] is None]
            self._count_rows(s, counted, column, by)
            return rows

        return self._call(work, transaction=True)

    def _count_rows(
        self,
        s: Session,
        rows: Sequence[Any],
        column: str,
        by: int,
        ttc: float | None = None,
    ) -> None:
        """SQLite: add ``by`` to ``column`` (and with ``ttc``, the time of the
        confirmation, 1 to its bucket) in the cells of ``rows``."""
        cells: dict[tuple[int, str, str], dict[str, Any]] = {}
        for row in rows:
            if row["country"] is None:
                continue
            key = (day_number(row["created_at"]), row["country"], row["sender"] or UNKNOWN_SENDER)
            cell = cells.get(key)
            if cell is None:
                cell = cells[key] = dict(zip(_KEY, key, strict=True)) | dict.fromkeys(_CELL, 0)
            cell[column] += by
            if ttc is not None:
                cell[_TTC[ttc_bucket(ttc - row["created_at"])]] += 1
        if cells:
            s.many(self._sql["count"], list(cells.values()))

    # -- execution -------------------------------------------------------------------

    def _writing(self) -> AbstractContextManager[None]:
        """SQLite: hold this process's write turn on the file around a write transaction
        (:class:`~twilio_feedback.stores._sqlite.WriteTurns`): a writer queued behind
        another of this process goes in as soon as that one commits, instead of sleeping
        in SQLite's busy handler. Past ``busy_timeout`` the writer goes on without its
        turn and lets SQLite decide."""
        if self._write_key is None:
            return contextlib.nullcontext()
        return self._turns.held(self._write_key)

    def _run(self, work: Callable[[Connection], _T]) -> _T:
        self._ensure_created()
        try:
            with self._connect() as conn:
                return work(conn)
        except self._sa.exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        # The server dropped a pooled connection (a restart, a failover) and the pool has
        # been renewed: one more try, on a fresh connection.
        with self._connect() as conn:
            return work(conn)

    def _call(
        self, work: Callable[[Session], _T], *, transaction: bool = False, write: bool = True
    ) -> _T:
        """``work`` on a session: the driver's own connection (``stores._sqlraw``) where it
        can, else a SQLAlchemy ``Connection`` (another driver, or an engine whose
        statements someone listens to). ``transaction``: the work's statements commit
        together (SQLite; on PostgreSQL every operation is one statement). ``write``: on
        SQLite, inside this process's write lock (:meth:`_writing`)."""
        self._ensure_created()
        if write and self._write_key is not None:
            with self._writing():
                return self._session(work, transaction)
        return self._session(work, transaction)

    def _session(self, work: Callable[[Session], _T], transaction: bool) -> _T:
        raw = self._raw
        if raw is not None and not instrumented(self.engine):
            return raw.run(work, transaction=transaction)
        return self._run(lambda conn: work(SASession(conn)))

    def _one(
        self, statement: Any, params: Mapping[str, Any] | None = None, *, write: bool = True
    ) -> Any:
        return self._call(lambda s: s.first(statement, params), write=write)

    # -- the Store protocol ----------------------------------------------------------

    def add(self, record: Record) -> None:
        values = {k: v for k, v in record.to_dict().items() if k in _COLUMNS}
        values["error_message"] = clip_error_message(values["error_message"])
        if record.country is None:
            self._call(functools.partial(_rowcount, self._sql["add"], values))
            return
        c = self.table.c
        self._counted(
            "add",
            lambda: self._sql["add"].returning(c.created_at, c.country, c.sender),
            "sent",
            1,
            params=values,
        )

    def get(self, tracking_id: str) -> Record | None:
        return _row(self._one(self._sql["get"], {"id": tracking_id}, write=False))

    def attach_sid(
        self, tracking_id: str, message_sid: str, account_sid: str | None
    ) -> Record | None:
        params = {"id": tracking_id, "sid": message_sid, "account": account_sid}
        return _row(self._one(self._sql["attach_sid"], params))

    def delete(self, tracking_id: str) -> None:
        t = self.table
        c = t.c

        def build() -> Any:
            return (
                t.delete()
                .where(c.tracking_id == self._sa.bindparam("id"))
                .returning(c.created_at, c.country, c.sender, c.message_sid)
            )

        # A record Twilio refused (no message SID) was never sent: its send is uncounted.
        self._counted("delete", build, "sent", -1, unsent=True, params={"id": tracking_id})

    def confirm(
        self, tracking_id: str, *, now: float, lease_until: float, keep_until: float
    ) -> tuple[bool, Record | None]:
        params = {"id": tracking_id, "now": now, "lease": lease_until, "keep": keep_until}
        if self.dialect == "postgresql":
            row = self._one(self._sql["confirm"], params)
            return (bool(row["won"]), _row(row)) if row is not None else (False, None)

        def work(s: Session) -> Any:
            row = s.first(self._sql["confirm"], params)
            if row is not None:
                self._count_rows(s, [row], "confirmed", 1, ttc=now)
            return row

        row = self._call(work, transaction=True)
        if row is not None:
            return True, _row(row)
        return False, self.get(tracking_id)

    def claim(self, *, now: float, lease_until: float, limit: int) -> list[Record]:
        params = {"now": now, "lease": lease_until, "limit": limit}
        return _rows(self._call(lambda s: s.all(self._sql["claim"], params)))

    def renew(self, held: Sequence[tuple[str, str]], *, lease_until: float) -> int:
        pairs = [(tracking_id, message_sid) for tracking_id, message_sid in held]
        count = 0
        for first in range(0, len(pairs), RENEW_BATCH):
            params = {"held": pairs[first : first + RENEW_BATCH], "lease": lease_until}
            count += self._call(functools.partial(_rowcount, self._sql["renew"], params))
        return count

    def _outcome(self, tracking_id: str, message_sid: str, changes: Mapping[str, Any]) -> bool:
        c = self.table.c
        p = self._sa.bindparam
        params = {"id": tracking_id, "sid": message_sid}
        params.update(
            {
                f"new_{name}": value.value if isinstance(value, State) else value
                for name, value in changes.items()
            }
        )

        def build() -> Any:
            return (
                self.table.update()
                .where(
                    c.tracking_id == p("id"),
                    c.message_sid == p("sid"),
                    c.state == State.CONFIRMED.value,
                )
                .values({name: p(f"new_{name}") for name in changes})
            )

        state = changes.get("state")
        if state is None:  # defer: counts nothing
            key = ("defer", *changes)
            statement = self._prepared.get(key)
            if statement is None:
                statement = self._prepared[key] = build()
            return bool(self._call(functools.partial(_rowcount, statement, params)))
        column = "reported" if State(state) is State.REPORTED else "failed"
        returning = (c.created_at, c.country, c.sender)
        rows = self._counted(
            (column, *changes), lambda: build().returning(*returning), column, 1, params=params
        )
        return bool(rows)

    def purge(self, *, now: float) -> int:
        """Delete the records whose ``expires_at`` is at or before ``now``; return how
        many. At most ``purge_batch`` records a transaction, with a pause between two (as
        long as the batch took) in which other writers go first. On SQLite a batch is
        sized to hold the write lock about 2 ms, and the purge copies what it wrote back to
        the database file itself, between two batches, every 250 records
        (:func:`~twilio_feedback.stores._sqlite.purge_in_batches`)."""

        def delete(limit: int) -> int:
            params = {"now": now, "limit": limit}
            return int(self._run(functools.partial(_execute, self._sql["purge"], params)).rowcount)

        sqlite = self._write_key is not None
        return purge_in_batches(
            delete,
            most=self.purge_batch,
            writing=self._writing if sqlite else None,
            checkpoint=self._checkpoint,
        )

    def _checkpoint(self) -> None:
        """SQLite: copy the write-ahead log back to the database file, without blocking
        writers (a passive checkpoint), outside the write lock. Otherwise the commit that
        takes the log past 1,000 pages does it, while it holds the lock: a purge writes
        that much every few batches, and a confirm that happens to cross the line would
        wait tens of milliseconds."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def counts(self) -> dict[str, int]:
        sa = self._sa
        t = self.table
        rows = self._run(
            lambda conn: conn.execute(
                sa.select(t.c.state, sa.func.count()).group_by(t.c.state)
            ).all()
        )
        result = {state.value: 0 for state in State}
        for state, count in rows:
            result[state] = int(count)
        return result

    def oldest_unreported(self) -> float | None:
        """See :meth:`HealthStore.oldest_unreported`: one statement, over the outbox's
        index."""
        t = self.table
        statement = self._sa.select(self._sa.func.min(t.c.confirmed_at)).where(
            self._confirmed, t.c.message_sid.is_not(None)
        )
        found = self._run(lambda conn: conn.execute(statement).scalar())
        return None if found is None else float(found)

    def close(self) -> None:
        """Close the store's connections, and dispose of the engine if this store created
        it."""
        self._threads.stop()
        if self._raw is not None:
            self._raw.dispose()
        if self._owns_engine:
            self.engine.dispose()

    # -- async -----------------------------------------------------------------------

    def as_async(self) -> AsyncStore:
        """The async twin: the sync operations off the event loop, in threads of the
        store's fed by a queue (one on SQLite, which takes one writer at a time;
        ``pool_size`` on PostgreSQL), each call in a copy of the awaiting task's context
        as with ``asyncio.to_thread``. With another driver, or an engine with statement
        listeners, in a worker thread (``asyncio.to_thread``)."""
        if self._raw is not None and not instrumented(self.engine):
            return StoreThreadAsyncStore(self, self._threads)
        return ThreadedAsyncStore(self)

    # -- operator commands (AdminStore) ------------------------------------------------

    def list_records(self, state: State, *, limit: int) -> list[Record]:
        t = self.table
        statement = (
            self._sa.select(t)
            .where(t.c.state == State(state).value)
            .order_by(t.c.created_at.desc())
            .limit(limit)
        )
        rows = self._run(lambda conn: conn.execute(statement).mappings().all())
        return _rows(rows)

    def requeue_failed(self, *, now: float, keep_until: float) -> int:
        params = {"now": now, "keep": keep_until}
        c = self.table.c
        rows = self._counted(
            "requeue",
            lambda: self._sql["requeue"].returning(c.created_at, c.country, c.sender),
            "failed",
            -1,
            params=params,
        )
        return len(rows)

    # -- conversion insights (InsightsStore) -------------------------------------------

    def insight_cells(self, since: date, until: date) -> list[Cell]:
        """See :meth:`InsightsStore.insight_cells`: one indexed range read of
        ``<table>_daily``."""
        d = self.daily
        statement = self._sa.select(d).where(
            d.c.day.between((since - EPOCH).days, (until - EPOCH).days)
        )
        rows = self._run(lambda conn: conn.execute(statement).mappings().all())
        return [
            cell_from_counts(
                row["day"], row["country"], row["sender"], [row[name] for name in _CELL]
            )
            for row in rows
        ]


DIALECTS = ("sqlite", "postgresql")
"""The databases the SQL store runs on: its statements are theirs (``ON CONFLICT`` upserts,
``UPDATE ... RETURNING``, row values, and on PostgreSQL ``FOR UPDATE SKIP LOCKED``)."""


def _check_dialect(name: str) -> None:
    if name not in DIALECTS:
        raise ConfigurationError(
            f"the SQL store runs on SQLite and PostgreSQL only, not {name}: use "
            "sqlite:///path.db or postgresql://..., or a store of your own for another "
            "database (see the docs on writing a store)"
        )


def _create_engine(
    sa: Any, url: Any, connect_timeout: float, busy_timeout: float, options: dict[str, Any]
) -> Engine:
    backend = url.get_backend_name()
    # No pool_pre_ping: it would cost a round trip on every confirm. A connection the
    # server dropped fails once and the operation is retried on a fresh one (_run).
    options.setdefault("pool_recycle", 1800)
    connect_args: dict[str, Any] = dict(options.pop("connect_args", {}))
    if backend == "sqlite":
        if url.database in (None, "", ":memory:") or url.query.get("mode") == "memory":
            raise ConfigurationError(
                "an in-memory SQLite database is private to one connection: use "
                "memory:// for an in-process store, or a file (sqlite:///feedback.db)"
            )
        connect_args.setdefault("timeout", busy_timeout)
        connect_args.setdefault("check_same_thread", False)
    elif backend == "postgresql" and "connect_timeout" not in url.query:
        # libpq counts whole seconds and treats anything under 2 as 2.
        connect_args.setdefault("connect_timeout", max(2, round(connect_timeout)))
    try:
        engine: Engine = sa.create_engine(url, connect_args=connect_args, **options)
    except ImportError as exc:
        if backend == "postgresql":
            raise MissingDependencyError("psycopg", "postgres", "the PostgreSQL store") from None
        raise MissingDependencyError(exc.name or str(exc), "sql", f"the {backend} store") from None
    except sa.exc.NoSuchModuleError:
        raise ConfigurationError(
            f"SQLAlchemy has no dialect for {url.drivername!r}: use sqlite:/// or postgresql://"
        ) from None
    return engine


def _sqlite_pragmas(busy_timeout: float) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # busy_timeout makes writers queue instead of failing with "database is locked"
        # when several processes confirm; WAL lets readers run beside the one writer.
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        _wal(cursor, busy_timeout)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return on_connect


def _wal(cursor: Any, busy_timeout: float) -> None:
    """Put the database file in WAL mode (it stays so: later connections find it set).

    Switching takes the file's exclusive lock, and SQLite answers "database is locked" at
    once, without waiting, while processes opening a new file at the same moment hold it:
    try again until ``busy_timeout``."""
    import sqlite3

    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
