"""Realistic records, and filling a store with them fast (size and scale benchmarks).

A record is what :meth:`FeedbackTracker.bind` writes: a tracking id from the token
signer, a message SID, no account SID (a message of the settings' own account: records
keep ``None`` for it, ``Settings.record_account``) unless a subaccount sent it,
``created_at`` now and ``expires_at`` the token's maximum age (3 days here) ahead. Records
are spread over time as a sender of 1M messages a day would make them (86.4 ms apart), so
timestamps are distinct, as in life.

:func:`bulk_add` writes records exactly as ``store.add`` does, batched:

- Redis: ``store.add`` itself, with the store's client swapped for one that queues every
  record's commands into one non-transactional pipeline, executed every ``batch``
  records (the library's own encoding; one round trip per batch instead of per record);
- SQL: one ``INSERT`` of many rows (executemany) on the store's own engine and table,
  with the values ``store.add`` would write (``Record.to_dict()``);
- Django: the store's own upsert, many rows a transaction (executemany) on Django's
  connection;
- anything else (memory, or a store whose internals changed): ``store.add`` per record.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

MAX_AGE = 3 * 24 * 3600.0
ONE_BY_ONE = "store.add, one record at a time"
SPACING = 86_400 / 1_000_000  # 1M messages a day


@dataclass(frozen=True)
class Issued:
    """A record and the token of its link."""

    record: Any  # twilio_feedback.Record
    token: str


def account_sid() -> str:
    """A random account SID (a subaccount's)."""
    return "AC" + secrets.token_hex(16)


def signer(secret_key: str | None = None) -> Any:
    """A token signer as the tracker builds it (default salt and skew)."""
    from twilio_feedback.tokens import TokenSigner

    return TokenSigner(secret_key or secrets.token_urlsafe(32))


def records(
    count: int,
    *,
    subaccount: str | None = None,
    token_signer: Any = None,
    state: str = "pending",
    expired: bool = False,
    sids: list[str] | None = None,
    start: float | None = None,
) -> Iterator[Issued]:
    """``count`` realistic records, the newest created now.

    Sent from the settings' own account unless ``subaccount`` is given: the records keep
    no account SID then, as the tracker writes them (``Settings.record_account``).
    ``state="confirmed"`` gives outbox entries (a SID, ``confirmed_at`` set, lease ended);
    ``expired=True`` puts ``expires_at`` in the past (records a purge removes). ``sids``
    are cycled through instead of fresh random SIDs (FakeTwilio knows only its own).
    """
    from twilio_feedback import Record, State

    sign = token_signer or signer()
    now = time.time() if start is None else start
    first = now - count * SPACING
    wanted = State(state)
    for n in range(count):
        tracking_id, token = sign.issue()
        created = first + n * SPACING
        expires = now - 60 - n * SPACING if expired else created + MAX_AGE
        sid = sids[n % len(sids)] if sids else "SM" + secrets.token_hex(16)
        record = Record(
            tracking_id,
            expires_at=expires,
            message_sid=sid,
            account_sid=subaccount,
            created_at=created,
        )
        if wanted is State.CONFIRMED:
            record = record.replace(state=wanted, confirmed_at=created, lease_until=0.0)
        yield Issued(record, token)


def bulk_add(store: Any, issued: Iterable[Issued], *, batch: int = 2000) -> str:
    """Add every record to ``store`` as ``store.add`` would, batched where possible;
    return how (for the results' notes)."""
    items = iter(issued)
    kind = type(store).__name__
    if kind == "RedisStore":
        return _redis_bulk(store, items, batch)
    if kind == "SQLStore":
        return _sql_bulk(store, items, batch)
    if kind == "DjangoStore":
        return _django_bulk(store, items, batch)
    for item in items:
        store.add(item.record)
    return ONE_BY_ONE


class _Queued:
    """What ``store.add`` sees as its pipeline: commands go to the shared one, and
    ``execute()`` waits for the batch."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def execute(self) -> list[Any]:
        return []


class _Batching:
    """Stands in for the store's client while :func:`bulk_add` runs."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe

    def pipeline(self, transaction: bool = True) -> _Queued:
        return _Queued(self._pipe)


def _redis_bulk(store: Any, items: Iterator[Issued], batch: int) -> str:
    batched = f"store.add with its commands pipelined, {batch:,} records a round trip"
    real = store.client
    first = next(items, None)
    if first is None:
        return batched
    pipe = real.pipeline(transaction=False)
    store.client = _Batching(pipe)
    try:
        try:
            store.add(first.record)
        except AttributeError:
            # store.add no longer goes through client.pipeline(): the public API it is.
            pipe.reset()
            store.client = real
            store.add(first.record)
            for item in items:
                store.add(item.record)
            return ONE_BY_ONE
        while True:
            chunk = list(islice(items, batch))
            for item in chunk:
                store.add(item.record)
            pipe.execute()
            if len(chunk) < batch:
                return batched
    finally:
        store.client = real


def _sql_bulk(store: Any, items: Iterator[Issued], batch: int) -> str:
    batched = f"INSERT of {batch:,} rows a statement on the store's engine and table"
    first = next(items, None)
    if first is None:
        return batched
    store.add(first.record)  # creates the table, as the first use does
    table, engine = getattr(store, "table", None), getattr(store, "engine", None)
    if table is None or engine is None:
        for item in items:
            store.add(item.record)
        return ONE_BY_ONE
    columns = {column.name for column in table.columns}
    fallback = False
    while True:
        chunk = list(islice(items, batch))
        if chunk:
            rows = [item.record.to_dict() for item in chunk]
            if not set(rows[0]) <= columns:  # the layout changed: the public API it is
                fallback = True
                for item in chunk:
                    store.add(item.record)
            else:
                with engine.begin() as conn:
                    conn.execute(table.insert(), rows)
        if len(chunk) < batch:
            return batched if not fallback else ONE_BY_ONE


def _django_bulk(store: Any, items: Iterator[Issued], batch: int) -> str:
    from django.db import connections, transaction

    from twilio_feedback.records import RECORD_FIELDS

    batched = f"the store's upsert, {batch:,} rows a transaction (executemany), Django's connection"
    sql = getattr(store, "_sql", {}).get("add")
    if sql is None:
        for item in items:
            store.add(item.record)
        return ONE_BY_ONE
    while True:
        chunk = list(islice(items, batch))
        if chunk:
            rows = [item.record.to_dict() for item in chunk]
            with transaction.atomic(using=store.alias), connections[store.alias].cursor() as cur:
                cur.executemany(sql, [[row[name] for name in RECORD_FIELDS] for row in rows])
        if len(chunk) < batch:
            return batched
