"""What the SQL store adds to the contract: URLs, the table, sharing an engine, dialects."""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from twilio_feedback import ConfigurationError, MissingDependencyError, Record, State
from twilio_feedback.insights import CELL_COLUMNS, CELL_KEY
from twilio_feedback.records import RECORD_FIELDS
from twilio_feedback.stores import ThreadedAsyncStore, store_from_url
from twilio_feedback.stores.sql import SCHEMA_VERSION, SQLStore, normalize_url

from ..servers import PostgresServer

SID = "SM" + "a" * 32
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/feedback.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(url: str) -> Iterator[SQLStore]:
    store = SQLStore(url)
    yield store
    store.close()


def test_postgres_urls_use_psycopg_3() -> None:
    for given in ("postgres://u@h/db", "postgresql://u@h/db", "postgresql+psycopg://u@h/db"):
        assert normalize_url(given) == "postgresql+psycopg://u@h/db"
        store = store_from_url(given)
        assert isinstance(store, SQLStore)
        assert store.engine.url.drivername == "postgresql+psycopg"
        store.close()
    assert normalize_url("sqlite:///f.db") == "sqlite:///f.db"


def test_nothing_is_opened_before_first_use() -> None:
    store = SQLStore("postgresql://u@127.0.0.1:1/db")  # nothing listens there
    with pytest.raises(sa.exc.OperationalError):
        store.get("x")
    store.close()


def test_table_created_on_first_use_with_schema_version(url: str) -> None:
    store = SQLStore(url + "?table=app_feedback")
    assert store.table.name == "app_feedback"
    assert "app_feedback" not in sa.inspect(store.engine).get_table_names()
    store.add(Record("x", expires_at=time.time() + 60))
    inspector = sa.inspect(store.engine)
    assert {"app_feedback", "app_feedback_meta"} <= set(inspector.get_table_names())
    indexes = {ix["name"]: ix for ix in inspector.get_indexes("app_feedback")}
    # The sweep's index holds only the outbox (confirmed rows), not every pending row.
    assert indexes["app_feedback_due"]["column_names"] == ["lease_until"]
    assert "app_feedback_outbox" not in indexes
    assert indexes["app_feedback_expiry"]["column_names"] == ["expires_at"]  # purge's
    partial = _index_sql(store, "app_feedback_due").replace("::text", "")
    partial = partial.replace("(", "").replace(")", "")
    assert "WHERE state = 'confirmed'" in partial
    with store.engine.connect() as conn:
        version = conn.execute(sa.select(store.meta.c.value)).scalar()
    assert version == str(SCHEMA_VERSION)
    if store.dialect == "postgresql":
        comment = inspector.get_table_comment("app_feedback")["text"]
        assert comment == f"twilio-feedback schema {SCHEMA_VERSION}"
    store.close()


def test_the_tables_hold_the_record_and_the_cell(store: SQLStore) -> None:
    # The columns are named where their rule lives: the record's fields, the cell's counts.
    store.add(Record("x", expires_at=time.time() + 60))
    inspector = sa.inspect(store.engine)
    columns = [c["name"] for c in inspector.get_columns(store.table.name)]
    assert sorted(columns) == sorted(RECORD_FIELDS)
    daily = [c["name"] for c in inspector.get_columns(f"{store.table.name}_daily")]
    assert sorted(daily) == sorted((*CELL_KEY, *CELL_COLUMNS))


def test_a_newer_schema_is_refused(url: str) -> None:
    first = SQLStore(url)
    first.create()
    with first.engine.begin() as conn:
        conn.execute(first.meta.update().values(value=str(SCHEMA_VERSION + 1)))
    first.close()
    second = SQLStore(url)
    with pytest.raises(ConfigurationError, match="upgrade twilio-feedback"):
        second.get("x")
    second.close()


def test_create_false_leaves_the_schema_to_you(url: str) -> None:
    store = SQLStore(url, create=False)
    with pytest.raises(sa.exc.DBAPIError):
        store.get("x")
    store.create()
    assert store.get("x") is None
    store.close()


def _first_use_at_once(stores: list[SQLStore]) -> list[BaseException]:
    """Use every store for the first time at once, each in its thread (as processes
    starting together do); the errors they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def first_use(store: SQLStore) -> None:
        try:
            barrier.wait(10)
            store.get("x")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return errors


def test_many_processes_creating_the_table_at_once(url: str) -> None:
    stores = [SQLStore(url) for _ in range(8)]
    errors = _first_use_at_once(stores)
    for store in stores:
        store.close()
    assert errors == []


def test_a_shared_engine_is_left_open(url: str) -> None:
    engine = sa.create_engine(normalize_url(url))
    pool = engine.pool
    store = SQLStore(engine)
    store.add(Record("x", expires_at=time.time() + 60))
    store.close()
    assert engine.pool is pool  # not disposed
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.table)).scalar() == 1
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    store = SQLStore(f"sqlite:///{tmp_path}/f.db", busy_timeout=7.5)
    store.get("x")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 7500
    store.close()


def test_in_memory_sqlite_is_refused() -> None:
    for url in ("sqlite://", "sqlite:///:memory:"):
        with pytest.raises(ConfigurationError, match="memory://"):
            SQLStore(url)


@pytest.mark.parametrize("url", ["mysql://u@h/db", "mssql+pymssql://u@h/db", "oracle://h/db"])
def test_other_dialects_are_refused_at_construction(url: str) -> None:
    # The store's statements (upserts, UPDATE ... RETURNING, row values) are SQLite's and
    # PostgreSQL's: another database must be refused before a request reaches it.
    with pytest.raises(ConfigurationError, match=r"SQLite and PostgreSQL only.*sqlite:///"):
        SQLStore(url)
    engine = sa.create_mock_engine(url, executor=lambda *args, **kwargs: None)
    with pytest.raises(ConfigurationError, match=r"SQLite and PostgreSQL only"):
        SQLStore(engine)  # type: ignore[arg-type]


def test_postgres_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    real = sa.create_engine

    def spy(url: Any, **options: Any) -> Any:
        seen.append(options["connect_args"])
        return real(url, **options)

    monkeypatch.setattr(sa, "create_engine", spy)
    SQLStore("postgresql://u@127.0.0.1:1/db", connect_timeout=4).close()
    SQLStore("postgresql://u@127.0.0.1:1/db", connect_timeout=0.5).close()
    SQLStore("postgresql://u@127.0.0.1:1/db?connect_timeout=9").close()
    assert seen == [{"connect_timeout": 4}, {"connect_timeout": 2}, {}]  # 2: libpq's floor


@pytest.mark.parametrize(
    ("module", "url", "extra"),
    [
        ("sqlalchemy", "sqlite:///f.db", "sql"),
        ("psycopg", "postgresql://u@h/db", "postgres"),
    ],
)
def test_missing_packages_name_the_extra(
    module: str, url: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingDependencyError, match=rf"twilio-feedback\[{extra}\]"):
        store_from_url(url)


def test_the_async_twin_runs_in_a_thread(store: SQLStore) -> None:
    assert isinstance(store.as_async(), ThreadedAsyncStore)


def test_claim_takes_the_longest_waiting_first(store: SQLStore) -> None:
    now = time.time()
    for n, lease in enumerate((30.0, 10.0, 20.0)):
        store.add(Record(f"t{n}", expires_at=now + 600, message_sid=SID))
        store.confirm(f"t{n}", now=now, lease_until=now - lease, keep_until=now)
    claimed = store.claim(now=now, lease_until=now + 60, limit=2)
    assert [r.tracking_id for r in claimed] == ["t0", "t2"]


@pytest.mark.postgres
@pytest.mark.slow
def test_a_postgres_restart_costs_no_request() -> None:
    server = PostgresServer()
    try:
        store = SQLStore(server.fresh_database())
        now = time.time()
        for name in ("a", "b"):
            store.add(Record(name, expires_at=now + 600, message_sid=SID))
        assert store.confirm("a", now=now, lease_until=now, keep_until=now)[0]
        server.halt()
        server.start()
        # The pooled connection died with the server; the store retries on a new one.
        won, record = store.confirm("b", now=now, lease_until=now, keep_until=now)
        assert won
        assert record is not None
        assert record.state is State.CONFIRMED
        store.close()
    finally:
        server.stop()


def test_sqlite_claim_updates_only_the_rows_it_picked(tmp_path: Path) -> None:
    # The outer UPDATE must look the picked rows up by rowid: with the outbox's
    # predicates repeated on it, SQLite walks every due row instead (18x slower with
    # 100,000 waiting, bench/RESULTS.md); by the tracking id, it walks the primary key's
    # own index first, a random page of it per row in a large table (bench flat: claim).
    store = SQLStore(f"sqlite:///{tmp_path}/feedback.db")
    store.create()
    statement = store._sql["claim"]
    compiled = statement.compile(dialect=store.engine.dialect)
    params = compiled.construct_params({"now": 1.0, "lease": 2.0, "limit": 100})
    values = tuple(params[name] for name in compiled.positiontup or ())
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", values).all()
    plan = [row[-1] for row in rows]
    outer = next(step for step in plan if step.startswith(("SEARCH", "SCAN")))
    assert "USING INTEGER PRIMARY KEY (rowid=?)" in outer, plan
    store.close()


def test_sqlite_writers_of_one_process_queue_on_a_lock_not_in_the_busy_handler(
    tmp_path: Path,
) -> None:
    # A confirm queued behind a purge's batch (or any write) of this process is let in
    # the moment that transaction commits: SQLite's own busy handler would sleep on
    # (1, 2, 5, ... 100 ms between tries), stalling it up to 100 ms past the commit (bench
    # flat: confirm while purging). Two stores on one file share the lock. The confirming
    # store's connections have SQLite's busy timeout at 0: had it not waited for the lock,
    # SQLite would refuse it at once ("database is locked").
    url = f"sqlite:///{tmp_path}/feedback.db"
    store, other = SQLStore(url), SQLStore(url)
    sa.event.listen(
        store.engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA busy_timeout = 0")
    )
    now = time.time()
    store.add(Record("live", expires_at=now + 600, message_sid=SID))
    waiting = threading.Event()
    confirmed: list[float] = []

    def confirm() -> None:
        waiting.set()
        won, _ = store.confirm("live", now=now, lease_until=now + 60, keep_until=now + 600)
        confirmed.append(time.perf_counter() if won else -1.0)

    thread = threading.Thread(target=confirm)
    with other._writing(), other.engine.begin() as conn:
        t = other.table
        conn.execute(t.update().where(t.c.tracking_id == "live").values(attempts=t.c.attempts))
        thread.start()
        waiting.wait(5)
        time.sleep(0.24)  # a write transaction this long, while the confirm waits
    thread.join(10)
    assert len(confirmed) == 1
    assert confirmed[0] > 0  # won, after waiting for its turn
    store.close()
    other.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_inherit_a_held_write_lock(tmp_path: Path) -> None:
    # gunicorn --preload forks while the parent's reporter may be mid-write: the child's
    # copy of the write lock would stay held by a thread that does not exist there.
    store = SQLStore(f"sqlite:///{tmp_path}/feedback.db", busy_timeout=3.0)
    store.create()
    held, release = threading.Event(), threading.Event()

    def writer() -> None:
        with store._writing():
            held.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    held.wait(5)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
            pid = os.fork()
        if pid == 0:  # the child: one write, at once, then leave
            code = 1
            try:
                started = time.monotonic()
                store.add(Record("child", expires_at=time.time() + 600))
                code = 0 if time.monotonic() - started < 1.0 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        thread.join(10)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.get("child") is not None
    store.close()


def test_purge_deletes_in_short_transactions(url: str) -> None:
    # A purge of many expired records must not hold SQLite's one write lock (or, on
    # PostgreSQL, the server) for its whole length: it deletes a batch a transaction, and
    # confirms get in between (bench flat: "confirm while purging").
    store = SQLStore(url, purge_batch=10)
    now = time.time()
    for n in range(25):
        store.add(Record(f"old{n}", expires_at=now - 1, message_sid=SID))
    store.add(Record("live", expires_at=now + 600, message_sid=SID))
    deleted: list[int] = []

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            deleted.append(cursor.rowcount)

    sa.event.listen(store.engine, "after_cursor_execute", count)
    assert store.purge(now=now) == 25
    # purge_batch is the most a batch deletes (SQLite sizes its batches by their time).
    assert sum(deleted) == 25, deleted
    assert max(deleted) == 10, deleted
    assert store.get("live") is not None
    assert store.purge(now=now) == 0
    store.close()


def _index_sql(store: SQLStore, name: str) -> str:
    if store.dialect == "postgresql":
        query = "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
    else:
        query = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"
    with store.engine.connect() as conn:
        return str(conn.execute(sa.text(query), {"name": name}).scalar())


def _make_old(url: str, version: int = 1) -> None:
    """Turn the store's tables into the layout of schema ``version``: up to 2, no
    ``country`` and ``sender`` columns and no ``_daily`` table; in 1, also the outbox index
    on (state, lease_until) over every row. The version in the meta table."""
    store = SQLStore(url)
    store.create()
    table = store.table.name
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {table}_daily")
        for column in ("country", "sender"):
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
        if version == 1:
            conn.exec_driver_sql(f"DROP INDEX {table}_due")
            conn.exec_driver_sql(f"CREATE INDEX {table}_outbox ON {table} (state, lease_until)")
        conn.execute(store.meta.update().values(value=str(version)))
        if store.dialect == "postgresql":
            comment = f"twilio-feedback schema {version}"
            conn.exec_driver_sql(f"COMMENT ON TABLE {table} IS '{comment}'")
    store.close()


def _add_old(url: str, *names: str, now: float) -> None:
    """Write records as a schema 1 or 2 store did, without country or sender: ``waiting``
    confirmed and due, the others pending."""
    engine = sa.create_engine(normalize_url(url))
    with engine.begin() as conn:
        for name in names:
            conn.execute(
                sa.text(
                    "INSERT INTO twilio_feedback_records (tracking_id, state, message_sid, "
                    "expires_at, created_at, confirmed_at, lease_until, attempts) "
                    "VALUES (:id, :state, :sid, :expires, :now, :confirmed, :lease, 0)"
                ),
                {
                    "id": name,
                    "state": "confirmed" if name == "waiting" else "pending",
                    "sid": SID,
                    "expires": now + 600,
                    "now": now,
                    "confirmed": now if name == "waiting" else None,
                    "lease": now - 1 if name == "waiting" else 0.0,
                },
            )
    engine.dispose()


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_schema_is_upgraded_in_place(url: str, version: int) -> None:
    _make_old(url, version)
    now = time.time()
    _add_old(url, "waiting", "pending", now=now)

    store = SQLStore(url)
    pending = store.get("pending")  # first use upgrades: records are kept
    assert pending is not None
    assert (pending.country, pending.sender) == (None, None)
    inspector = sa.inspect(store.engine)
    names = {ix["name"] for ix in inspector.get_indexes(store.table.name)}
    assert f"{store.table.name}_due" in names
    assert f"{store.table.name}_outbox" not in names
    columns = {column["name"] for column in inspector.get_columns(store.table.name)}
    assert {"country", "sender"} <= columns
    assert inspector.has_table(f"{store.table.name}_daily")
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(store.meta.c.value)).scalar() == str(SCHEMA_VERSION)
    if store.dialect == "postgresql":
        comment = inspector.get_table_comment(store.table.name)["text"]
        assert comment == f"twilio-feedback schema {SCHEMA_VERSION}"
    assert [r.tracking_id for r in store.claim(now=now, lease_until=now + 60, limit=10)] == [
        "waiting"
    ]
    assert store.confirm("pending", now=now, lease_until=now + 60, keep_until=now)[0]
    today = datetime.fromtimestamp(now, timezone.utc).date()
    assert store.insight_cells(today, today) == []  # records from before count nowhere
    store.add(Record("new", expires_at=now + 600, created_at=now, country="FR", sender="Acme"))
    assert store.confirm("new", now=now + 5, lease_until=now + 60, keep_until=now)[0]
    [cell] = store.insight_cells(today, today)
    assert (cell.country, cell.sender, cell.sent, cell.confirmed, cell.ttc[0]) == (
        "FR",
        "Acme",
        1,
        1,
        1,
    )
    store.close()


@pytest.mark.parametrize("version", [1, 2])
def test_many_processes_upgrading_an_older_table_at_once(url: str, version: int) -> None:
    _make_old(url, version)
    stores = [SQLStore(url) for _ in range(8)]
    errors = _first_use_at_once(stores)
    names = {ix["name"] for ix in sa.inspect(stores[0].engine).get_indexes(stores[0].table.name)}
    for store in stores:
        store.close()
    assert errors == []
    assert f"{stores[0].table.name}_due" in names


@pytest.mark.postgres
def test_postgres_claim_uses_the_outbox_index_in_a_generic_plan(postgres_url: str) -> None:
    # The partial index serves the claim only if the statement says state = 'confirmed'
    # as a literal: a bound parameter would leave a cached (generic) plan without it.
    store = SQLStore(postgres_url)
    store.create()
    compiled = store._sql["claim"].compile(dialect=store.engine.dialect)
    with store.engine.connect() as conn:
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        conn.exec_driver_sql("SET enable_seqscan = off")
        conn.exec_driver_sql(f"PREPARE claim AS {str(compiled) % _dollars(compiled)}")
        plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN EXECUTE claim(1, 2, 3)"))
    assert f"{store.table.name}_due" in plan, plan
    store.close()


def _dollars(compiled: Any) -> dict[str, str]:
    order = {"now": "$1", "limit": "$2", "lease": "$3"}
    return {name: order[name] for name in compiled.params}
