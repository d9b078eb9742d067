"""The Redis record format: small, the same in Python and Lua, and readable from 0.1's hashes.

A record is one packed string (``pack_record``, and ``stores/lua/record.lua`` for the
scripts). twilio-feedback 0.1 wrote one hash per record: those are read by every operation
and rewritten packed when a script changes them, so an upgrade loses nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twilio_feedback import Record, State
from twilio_feedback.stores.base import clip_error_message
from twilio_feedback.stores.redis import (
    _RECORD_LUA,
    AsyncRedisStore,
    RedisStore,
    _queue_add,
    pack_record,
    unpack_record,
)
from twilio_feedback.testing.conformance import StoreConformance

from ..servers import RedisServer

pytestmark = pytest.mark.redis

SID = "SM" + "0123456789abcdef" * 2
OTHER_SID = "MM" + "fedcba9876543210" * 2
ACCOUNT = "AC" + "cd" * 16
DAY = 86_400.0


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_url)
    yield store
    store.close()


def _used_memory(store: RedisStore) -> int:
    return int(store.client.info("memory")["used_memory"])


# -- size ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("account", "country", "sender"),
    [
        (None, None, None),
        (ACCOUNT, None, None),
        (None, "US", "+15017122661"),
        (None, "US", "MG" + "9b" * 16),
    ],
    ids=["own-account", "subaccount", "insights-phone-number", "insights-messaging-service"],
)
def test_a_pending_record_takes_at_most_200_bytes(
    store: RedisStore, account: str | None, country: str | None, sender: str | None
) -> None:
    # As bench/bench_store_size.py measures it: the used_memory delta over many records.
    # 16,383 records and the day's insights: 2^14 keys, so the key tables have grown to
    # 2^14 buckets and finished rehashing (each record carries its share of them, 16 B, and
    # no half-moved table), and the next key would double them.
    count = 16_383
    now = time.time() // DAY * DAY  # the records' 24 minutes in one UTC day: one hash
    before = _used_memory(store)
    with store.client.pipeline(transaction=False) as pipe:  # what store.add sends, batched
        for n in range(count):
            created = now + n * 0.0864
            record = Record(
                f"{n:012x}",  # tracking ids are 12 characters
                expires_at=created + 3 * DAY,
                message_sid="SM" + f"{n:032x}",
                account_sid=account,
                created_at=created,
                country=country,
                sender=sender,
            )
            _queue_add(pipe, store, record)
            if n % 1000 == 999:
                pipe.execute()
        pipe.execute()
    assert store.client.dbsize() == count + (country is not None)  # + the day's insights
    per_record = (_used_memory(store) - before) / count
    assert per_record <= 200, f"{per_record:.0f} bytes per pending record"


# -- one format, in Python and in Lua ---------------------------------------------------

_sids = st.one_of(
    st.none(),
    st.from_regex(r"(SM|MM|AC)[0-9a-f]{32}", fullmatch=True),
    st.text(max_size=40),  # anything else is kept as text
)
_times = st.floats(min_value=-1e10, max_value=1e11, allow_nan=False)
_records = st.builds(
    Record,
    tracking_id=st.just("t1"),
    expires_at=_times,
    state=st.sampled_from(list(State)),
    message_sid=_sids,
    account_sid=_sids,
    created_at=_times,
    confirmed_at=st.none() | _times,
    lease_until=st.just(0.0) | _times,
    attempts=st.integers(min_value=0, max_value=2**31 - 1),
    error_code=st.none() | st.integers(min_value=-(2**31), max_value=2**31 - 1),
    error_message=st.none() | st.text(max_size=600),
    country=st.none() | st.from_regex(r"[A-Z]{2}", fullmatch=True),
    sender=_sids,
)


@settings(max_examples=200, deadline=None)
@given(record=_records)
def test_python_and_lua_read_and_write_the_same_bytes(
    redis_server: RedisServer, record: Record
) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    expected = record.replace(error_message=clip_error_message(record.error_message))
    value = pack_record(record)
    assert unpack_record("t1", value) == expected
    again = client.eval(_RECORD_LUA + "return encode(decode(ARGV[1]))", 0, value)
    assert again == value
    client.close()


def test_a_pending_record_is_37_bytes_and_55_with_an_account() -> None:
    record = Record("t1", expires_at=time.time() + 3 * DAY, message_sid=SID, created_at=1.0)
    assert len(pack_record(record)) == 37
    assert len(pack_record(record.replace(account_sid=ACCOUNT))) == 55
    with_insights = record.replace(country="US", sender="+15017122661")
    assert len(pack_record(with_insights)) == 37 + 3 + 14
    assert len(pack_record(with_insights.replace(sender="MG" + "9b" * 16))) == 37 + 3 + 18


@settings(max_examples=300, deadline=None)
@given(
    timestamp=st.floats(min_value=-1e10, max_value=1e11, allow_nan=False)
    | st.integers(min_value=-1000, max_value=100_000).map(lambda day: day * DAY)
    | st.integers(min_value=-1000, max_value=100_000).map(lambda day: day * DAY - 1e-9)
)
def test_lua_puts_a_send_on_the_same_day_as_python(
    redis_server: RedisServer, timestamp: float
) -> None:
    import redis

    from twilio_feedback.insights import day_number

    client = redis.Redis.from_url(redis_server.url)
    script = _RECORD_LUA + "return tostring(day_number(tonumber(ARGV[1])))"
    assert int(client.eval(script, 0, repr(timestamp))) == day_number(timestamp)
    client.close()


def test_a_value_of_an_unknown_format_is_refused() -> None:
    value = bytearray(pack_record(Record("t1", expires_at=1.0)))
    value[0] = 2
    with pytest.raises(ValueError, match="unknown Redis record format 2"):
        unpack_record("t1", bytes(value))


# -- records written by twilio-feedback 0.1 ----------------------------------------------


FIELDS_OF_0_1 = (
    "tracking_id",
    "expires_at",
    "state",
    "message_sid",
    "account_sid",
    "created_at",
    "confirmed_at",
    "lease_until",
    "attempts",
    "error_code",
    "error_message",
)


def _hash_of_0_1(record: Record) -> dict[str, str]:
    """A record as twilio-feedback 0.1 stored it: every field of its record by name."""
    record = record.replace(error_message=clip_error_message(record.error_message))
    return {
        name: repr(value) if isinstance(value, float) else str(value)
        for name, value in record.to_dict().items()
        if value is not None and name in FIELDS_OF_0_1
    }


def write_as_0_1(store: RedisStore, record: Record) -> None:
    """``store.add`` as twilio-feedback 0.1 ran it: one hash, its TTL, the outbox entry."""
    key = store.key(record.tracking_id)
    with store.client.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(key, mapping=_hash_of_0_1(record))
        pipe.pexpireat(key, int(record.expires_at * 1000))
        if record.state is State.CONFIRMED and record.message_sid:
            pipe.zadd(store.outbox, {record.tracking_id: record.lease_until})
        else:
            pipe.zrem(store.outbox, record.tracking_id)
        pipe.execute()


class RedisStoreOf01Records(RedisStore):
    """A store whose records were written by twilio-feedback 0.1: ``add`` writes a hash,
    every other operation is today's. A record with a country (the insights, which 0.1
    did not have) is written as today's store does."""

    def add(self, record: Record) -> None:
        if record.country is None:
            write_as_0_1(self, record)
        else:
            super().add(record)


class TestRecordsWrittenBy01(StoreConformance):
    """The whole contract, on records 0.1 wrote (other processes run today's store)."""

    @pytest.fixture
    def store(self, redis_url: str) -> Iterator[RedisStore]:
        store = RedisStoreOf01Records(redis_url, prefix="old:")
        yield store
        store.close()

    @pytest.fixture
    def store_factory(self, redis_url: str) -> str:
        return f"{redis_url}?prefix=old:"


def _type(store: RedisStore, tracking_id: str) -> str:
    return str(store.client.type(store.key(tracking_id)).decode())


def _fields(record: Record | None) -> dict[str, Any]:
    assert record is not None
    return record.to_dict()


def test_0_1_records_are_read_and_rewritten_packed_when_changed(store: RedisStore) -> None:
    now = time.time()
    pending = Record(
        "pending", expires_at=now + DAY, message_sid=SID, account_sid=ACCOUNT, created_at=now
    )
    due = Record(
        "due",
        expires_at=now + DAY,
        state=State.CONFIRMED,
        message_sid=OTHER_SID,
        account_sid=ACCOUNT,
        created_at=now - 60,
        confirmed_at=now - 30,
        lease_until=now - 1,
        attempts=2,
        error_code=20503,
        error_message="Service Unavailable",
    )
    failed = Record(
        "failed",
        expires_at=now + DAY,
        state=State.FAILED,
        message_sid=SID,
        created_at=now - 60,
        confirmed_at=now - 30,
        error_code=20003,
        error_message="Authenticate",
    )
    for record in (pending, due, failed):
        write_as_0_1(store, record)

    # Reads: exactly what 0.1 wrote, and the keys stay hashes.
    assert [store.get(r.tracking_id) for r in (pending, due, failed)] == [pending, due, failed]
    assert store.counts() == {"pending": 1, "confirmed": 1, "reported": 0, "failed": 1}
    assert store.list_records(State.FAILED, limit=10) == [failed]
    assert store.oldest_unreported() == pytest.approx(due.confirmed_at)
    assert {_type(store, r.tracking_id) for r in (pending, due, failed)} == {"hash"}

    # A confirm: one script, the record rewritten packed, TTL kept in step.
    won, confirmed = store.confirm("pending", now=now, lease_until=now + 60, keep_until=now + 2)
    assert won
    assert _fields(confirmed) == {
        **pending.to_dict(),
        "state": "confirmed",
        "confirmed_at": now,
        "lease_until": now + 60,
    }
    assert _type(store, "pending") == "string"
    assert store.client.pexpiretime(store.key("pending")) == int((now + DAY) * 1000)
    assert store.get("pending") == confirmed

    # The sweep finds 0.1's outbox entry (scored in seconds, as today's are).
    claimed = store.claim(now=now, lease_until=now + 120, limit=10)
    assert claimed == [due.replace(lease_until=now + 120)]
    assert _type(store, "due") == "string"
    assert store.renew([("due", OTHER_SID)], lease_until=now + 180) == 1
    assert store.mark_reported("due", OTHER_SID)
    assert _fields(store.get("due"))["state"] == "reported"

    # The operator's retry of a failed record.
    assert store.requeue_failed(now=now, keep_until=now + 2 * DAY) == 1
    requeued = store.get("failed")
    assert requeued == failed.replace(
        state=State.CONFIRMED,
        confirmed_at=now,
        expires_at=now + 2 * DAY,
        error_code=None,
        error_message=None,
    )
    assert _type(store, "failed") == "string"
    assert store.counts() == {"pending": 0, "confirmed": 2, "reported": 1, "failed": 0}


def test_outcomes_and_sids_reach_0_1_records(store: RedisStore) -> None:
    now = time.time()
    confirmed = Record(
        "c",
        expires_at=now + DAY,
        state=State.CONFIRMED,
        message_sid=SID,
        created_at=now,
        confirmed_at=now,
        lease_until=now + 60,
    )
    write_as_0_1(store, confirmed)
    assert not store.mark_failed("c", OTHER_SID, code=1, message="another message's outcome")
    assert _type(store, "c") == "hash"  # nothing changed, nothing rewritten
    assert store.defer("c", SID, lease_until=now + 5, attempts=1, code=20429, message="slow")
    assert store.get("c") == confirmed.replace(
        lease_until=now + 5, attempts=1, error_code=20429, error_message="slow"
    )
    assert store.mark_failed("c", SID, code=20003, message="Authenticate")

    # A confirmation that arrived before the SID, under 0.1: the SID brings it to the outbox.
    early = Record(
        "early",
        expires_at=now + DAY,
        state=State.CONFIRMED,
        created_at=now,
        confirmed_at=now,
        lease_until=now - 1,
    )
    write_as_0_1(store, early)
    attached = store.attach_sid("early", SID, None)
    assert attached == early.replace(message_sid=SID)
    assert [r.tracking_id for r in store.claim(now=now, lease_until=now + 60, limit=5)] == ["early"]
    assert store.attach_sid("gone", SID, ACCOUNT) is None


async def test_the_async_twin_confirms_0_1_records(store: RedisStore) -> None:
    twin = store.as_async()
    assert isinstance(twin, AsyncRedisStore)
    now = time.time()
    write_as_0_1(store, Record("x", expires_at=now + DAY, created_at=now))
    attached = await twin.attach_sid("x", SID, ACCOUNT)
    assert attached is not None
    assert (attached.message_sid, attached.account_sid) == (SID, ACCOUNT)
    write_as_0_1(store, Record("y", expires_at=now + DAY, message_sid=SID, created_at=now))
    won, record = await twin.confirm("y", now=now, lease_until=now + 60, keep_until=now)
    assert won
    assert record is not None
    assert record.state is State.CONFIRMED
    assert (await twin.confirm("y", now=now, lease_until=now + 60, keep_until=now))[0] is False
    await twin.aclose()


def test_an_expired_0_1_record_is_gone(store: RedisStore) -> None:
    now = time.time()
    write_as_0_1(store, Record("old", expires_at=now - 1, message_sid=SID, created_at=now - 60))
    assert store.get("old") is None
    assert store.confirm("old", now=now, lease_until=now, keep_until=now) == (False, None)
