"""SQL store on SQLAlchemy Core: SQLite (file, WAL) and PostgreSQL (psycopg 3).

One table, created on first use. Confirm and claim are single ``UPDATE ... RETURNING``
statements, so exactly one process wins a confirmation and a claim, whatever the number
of processes and hosts. On PostgreSQL a confirmation is one round trip whatever its
outcome (a data-modifying CTE also returns the row a loser needs to say why); on SQLite a
losing confirmation reads the row in a second, local statement.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError
from ..records import Record, State

if TYPE_CHECKING:
    from sqlalchemy import Engine, Table

__all__ = ["SCHEMA_VERSION", "SQLStore"]

SCHEMA_VERSION = 1
_COLUMNS = (
    "tracking_id",
    "state",
    "message_sid",
    "account_sid",
    "expires_at",
    "created_at",
    "confirmed_at",
    "lease_until",
    "attempts",
    "error_code",
    "error_message",
)


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


def _row(row: Mapping[str, Any] | Any) -> Record | None:
    if row is None:
        return None
    data = {name: row[name] for name in _COLUMNS}
    data["error_message"] = data["error_message"] or None
    return Record.from_dict(data)


class SQLStore:
    """A :class:`~twilio_feedback.stores.Store` in one SQL table.

    Pass a URL (``sqlite:///feedback.db``, ``postgresql://user@host/db``) or an existing
    SQLAlchemy ``Engine`` to share your app's pool. ``table`` names the table;
    ``connect_timeout`` bounds how long a request waits for a database that is down.
    """

    def __init__(
        self,
        url_or_engine: str | Engine,
        *,
        table: str = "twilio_feedback_records",
        connect_timeout: float = 3.0,
        create: bool = True,
    ) -> None:
        sa = _sqlalchemy()
        if isinstance(url_or_engine, str):
            url = normalize_url(url_or_engine)
            # No pool_pre_ping: it would cost a round trip on every confirm. A connection
            # the server dropped fails one operation, and the pool replaces it.
            kwargs: dict[str, Any] = {"pool_recycle": 1800}
            if url.startswith("sqlite"):
                kwargs["connect_args"] = {"timeout": connect_timeout, "check_same_thread": False}
            elif url.startswith("postgresql"):
                kwargs["connect_args"] = {"connect_timeout": max(1, round(connect_timeout))}
            self.engine: Engine = sa.create_engine(url, **kwargs)
            self._owns_engine = True
        else:
            self.engine = url_or_engine
            self._owns_engine = False
        self.dialect = self.engine.dialect.name
        # Every operation is one statement, atomic by itself: on a server, autocommit
        # spares the BEGIN and COMMIT round trips a transaction would add to each confirm.
        # SQLite is in process (no round trips) and faster in its own transactions.
        self._auto = (
            self.engine.begin
            if self.dialect == "sqlite"
            else self.engine.execution_options(isolation_level="AUTOCOMMIT").connect
        )
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
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
            sa.Column("error_message", sa.String(500)),
            sa.Index(f"{table}_outbox", "state", "lease_until"),
            sa.Index(f"{table}_expiry", "expires_at"),
            comment=f"twilio-feedback schema {SCHEMA_VERSION}",
        )
        self.meta = sa.Table(
            f"{table}_meta",
            metadata,
            sa.Column("key", sa.String(32), primary_key=True),
            sa.Column("value", sa.String(64), nullable=False),
        )
        self._metadata = metadata
        self._sql = self._statements(sa)
        if create:
            self.create()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLStore:
        """Build from a ``sqlite:///`` or ``postgresql://`` URL."""
        return cls(url, **options)

    def create(self) -> None:
        """Create the table if it is missing, and record (or check) the schema version."""
        sa = _sqlalchemy()
        self._metadata.create_all(self.engine, checkfirst=True)
        with self.engine.begin() as conn:
            found = conn.execute(
                sa.select(self.meta.c.value).where(self.meta.c.key == "schema_version")
            ).scalar()
            if found is None:
                with contextlib.suppress(sa.exc.IntegrityError):  # a racing process did it
                    conn.execute(
                        self.meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION))
                    )
            elif int(found) > SCHEMA_VERSION:
                raise RuntimeError(
                    f"table {self.table.name} has schema {found}, newer than this "
                    f"twilio-feedback understands ({SCHEMA_VERSION}): upgrade the package"
                )

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
            updated = confirm.cte("updated")
            won = sa.select(*updated.c, sa.literal(True).label("won"))
            lost = sa.select(*t.c, sa.literal(False).label("won")).where(
                c.tracking_id == p("id"), ~sa.exists(sa.select(updated.c.tracking_id))
            )
            confirm = sa.union_all(won, lost)
        candidates = (
            sa.select(c.tracking_id)
            .where(c.state == confirmed, c.message_sid.is_not(None), c.lease_until <= p("now"))
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
            claim = (
                t.update()
                .where(
                    c.tracking_id.in_(candidates.scalar_subquery()),
                    c.state == confirmed,
                    c.lease_until <= p("now"),
                )
                .values(lease_until=p("lease"))
                .returning(*t.c)
            )
        return {"confirm": confirm, "claim": claim}

    def _upsert(self, values: dict[str, Any]) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql as dialect
        elif self.dialect == "sqlite":
            from sqlalchemy.dialects import sqlite as dialect  # type: ignore[no-redef]
        else:  # pragma: no cover - other dialects: delete then insert in one transaction
            return None
        statement = dialect.insert(self.table).values(values)
        return statement.on_conflict_do_update(
            index_elements=[self.table.c.tracking_id],
            set_={k: statement.excluded[k] for k in values if k != "tracking_id"},
        )

    def add(self, record: Record) -> None:
        """See :meth:`Store.add`."""
        values = record.to_dict()
        statement = self._upsert(values)
        with self.engine.begin() as conn:
            if statement is None:  # pragma: no cover
                conn.execute(
                    self.table.delete().where(self.table.c.tracking_id == record.tracking_id)
                )
                conn.execute(self.table.insert().values(values))
            else:
                conn.execute(statement)

    def get(self, tracking_id: str) -> Record | None:
        """See :meth:`Store.get`."""
        sa = _sqlalchemy()
        with self._auto() as conn:
            row = (
                conn.execute(sa.select(self.table).where(self.table.c.tracking_id == tracking_id))
                .mappings()
                .first()
            )
        return _row(row)

    def _update(self, tracking_id: str, **values: Any) -> Record | None:
        t = self.table
        with self._auto() as conn:
            row = (
                conn.execute(
                    t.update()
                    .where(t.c.tracking_id == tracking_id)
                    .values(**values)
                    .returning(*t.c)
                )
                .mappings()
                .first()
            )
        return _row(row)

    def attach_sid(self, tracking_id: str, message_sid: str, account_sid: str) -> Record | None:
        """See :meth:`Store.attach_sid`."""
        return self._update(tracking_id, message_sid=message_sid, account_sid=account_sid)

    def delete(self, tracking_id: str) -> None:
        """See :meth:`Store.delete`."""
        with self._auto() as conn:
            conn.execute(self.table.delete().where(self.table.c.tracking_id == tracking_id))

    def confirm(
        self, tracking_id: str, *, now: float, lease_until: float, keep_until: float
    ) -> tuple[bool, Record | None]:
        """See :meth:`Store.confirm`: one statement."""
        params = {"id": tracking_id, "now": now, "lease": lease_until, "keep": keep_until}
        with self._auto() as conn:
            row = conn.execute(self._sql["confirm"], params).mappings().first()
        if self.dialect == "postgresql":
            return (bool(row["won"]), _row(row)) if row is not None else (False, None)
        if row is not None:
            return True, _row(row)
        return False, self.get(tracking_id)

    def claim(self, *, now: float, lease_until: float, limit: int) -> list[Record]:
        """See :meth:`Store.claim`: one statement."""
        params = {"now": now, "lease": lease_until, "limit": limit}
        with self._auto() as conn:
            rows = conn.execute(self._sql["claim"], params).mappings().all()
        return [record for record in map(_row, rows) if record is not None]

    def mark_reported(self, tracking_id: str) -> None:
        """See :meth:`Store.mark_reported`."""
        self._update(tracking_id, state=State.REPORTED.value, lease_until=0.0)

    def mark_failed(self, tracking_id: str, *, code: int | None, message: str | None) -> None:
        """See :meth:`Store.mark_failed`."""
        self._update(
            tracking_id,
            state=State.FAILED.value,
            lease_until=0.0,
            error_code=code,
            error_message=(message or "")[:500] or None,
        )

    def defer(
        self,
        tracking_id: str,
        *,
        lease_until: float,
        attempts: int,
        code: int | None,
        message: str | None,
    ) -> None:
        """See :meth:`Store.defer`."""
        self._update(
            tracking_id,
            lease_until=lease_until,
            attempts=attempts,
            error_code=code,
            error_message=(message or "")[:500] or None,
        )

    def requeue_failed(self) -> int:
        """Turn every ``failed`` record back into ``confirmed`` for another try."""
        t = self.table
        with self._auto() as conn:
            result = conn.execute(
                t.update()
                .where(t.c.state == State.FAILED.value)
                .values(state=State.CONFIRMED.value, lease_until=0.0, attempts=0)
            )
        return int(result.rowcount)

    def purge(self, *, now: float) -> int:
        """See :meth:`Store.purge`."""
        t = self.table
        with self._auto() as conn:
            result = conn.execute(t.delete().where(t.c.expires_at <= now))
        return int(result.rowcount)

    def counts(self) -> dict[str, int]:
        """See :meth:`Store.counts`."""
        sa = _sqlalchemy()
        t = self.table
        result = {state.value: 0 for state in State}
        with self._auto() as conn:
            for state, count in conn.execute(
                sa.select(t.c.state, sa.func.count()).group_by(t.c.state)
            ):
                result[state] = int(count)
        return result

    def close(self) -> None:
        """Dispose of the engine if this store created it."""
        if self._owns_engine:
            self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the one writer; busy_timeout makes writers queue
    # instead of failing with "database is locked" when several processes confirm.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
