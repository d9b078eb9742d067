"""Redis store on redis-py: one packed string per record, expiring by itself.

Each record is one string (:func:`pack_record`: a few bytes of flags, times as doubles,
SIDs as raw bytes, defaults left out) that Redis expires at the record's ``expires_at``
(``PEXPIREAT``). Records written by twilio-feedback 0.1 (one hash each) are read as well,
and rewritten packed by the first script that changes them. Unreported confirmations are
indexed in a sorted set scored by lease end, so the sweep reads due records directly and
never SCANs. Every state change that must be atomic
(confirm, claim, SID attachment, the reporter's outcomes) is one Lua script run with
``EVALSHA``: one round trip; the scripts ship as ``.lua`` files in ``stores/lua/``. Only
the operator's commands (counts, listing, re-queueing) SCAN the keys.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import date
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlencode

from ..errors import ConfigurationError, MissingDependencyError
from ..insights import (
    COUNTS,
    EPOCH,
    TTC_BUCKETS,
    UNKNOWN_SENDER,
    Cell,
    cell_from_counts,
    day_number,
)
from ..records import Record, State
from ..settings import redact_url
from .base import AsyncStore, BaseStore, InsightsStore, ThreadedAsyncStore, clip_error_message

if TYPE_CHECKING:
    import redis as redis_lib
    import redis.asyncio as redis_async

    from ._resp import RespClient, SyncRespClient

__all__ = [
    "AsyncRedisStore",
    "RedisStore",
    "check_prefix",
    "glob_escape",
    "pack_record",
    "unpack_record",
]

_T = TypeVar("_T")
_BATCH = 500
_RENEW_BATCH = 1000
_GLOB_SPECIAL = frozenset("*?[]\\")


def _lua_file(name: str) -> str:
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


_TTC_LUA = ", ".join("math.huge" if math.isinf(b) else repr(b) for b in TTC_BUCKETS)
_RECORD_LUA = f"local TTC_BUCKETS = {{{_TTC_LUA}}}\n" + _lua_file("record")


def _lua(name: str) -> str:
    """The source of a script shipped in ``stores/lua/`` (each says its KEYS and ARGV),
    after ``record.lua``, the record format every script shares."""
    return _RECORD_LUA + _lua_file(name)


_CONFIRM = _lua("confirm")
_CLAIM = _lua("claim")
_ATTACH_SID = _lua("attach_sid")
_OUTCOME = _lua("outcome")
_RENEW = _lua("renew")
_PURGE_OUTBOX = _lua("purge_outbox")
_REQUEUE = _lua("requeue")
_READ = _lua("read")
_DELETE = _lua("delete")
_SENT = COUNTS.index("sent")
_INSIGHTS_SCAN_DAYS = 400  # a longer span is read by scanning the insights' keys

# The record format, as stores/lua/record.lua describes it (the two must agree).
_FORMAT = 1
_HEAD = struct.Struct(">BHdd")
_DOUBLE = struct.Struct(">d")
_INT = struct.Struct(">i")
_STATES = (State.PENDING, State.CONFIRMED, State.REPORTED, State.FAILED)
_STATE_CODES = {state: code for code, state in enumerate(_STATES)}
_PACKABLE_SID = re.compile(r"[A-Z]{2}[0-9a-f]{32}")
_MESSAGE_PACKED, _MESSAGE_TEXT, _ACCOUNT_PACKED, _ACCOUNT_TEXT = 4, 8, 16, 32
_CONFIRMED_AT, _LEASE, _ATTEMPTS, _ERROR_CODE, _ERROR_MESSAGE = 64, 128, 256, 512, 1024
_COUNTRY, _SENDER_PACKED, _SENDER_TEXT = 2048, 4096, 8192


def _redis() -> Any:
    try:
        import redis
    except ImportError:
        raise MissingDependencyError("redis", "redis", "the Redis store") from None
    return redis


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _sid(sid: str, packed: int, text: int) -> tuple[int, bytes]:
    if _PACKABLE_SID.fullmatch(sid):
        return packed, sid[:2].encode() + bytes.fromhex(sid[2:])
    raw = sid.encode()
    return text, len(raw).to_bytes(2, "big") + raw


def pack_record(record: Record) -> bytes:
    """The value a record is stored as: one string, the tracking id left to the key.

    Format 1, big-endian: the format (1 byte), flags (2 bytes: the state in bits 0-1, then
    one bit a field present), ``expires_at`` and ``created_at`` as doubles, then only the
    fields that differ from their defaults: SIDs of two letters and 32 hex digits as the
    letters and 16 raw bytes (others as text), ``confirmed_at`` and a non-zero
    ``lease_until`` as doubles, non-zero ``attempts`` and ``error_code`` as 4-byte
    integers, the error message and country as length-prefixed UTF-8, the sender as the
    SIDs are. A pending record takes 37 bytes (55 with an account SID; with the insights'
    country and sender, 3 more and 14 for a phone number or 18 for a messaging service
    SID). ``stores/lua/record.lua`` reads and writes the same layout.
    """
    flags = _STATE_CODES[record.state]
    parts: list[bytes] = []
    for sid, packed, text in (
        (record.message_sid, _MESSAGE_PACKED, _MESSAGE_TEXT),
        (record.account_sid, _ACCOUNT_PACKED, _ACCOUNT_TEXT),
    ):
        if sid is not None:
            bit, part = _sid(sid, packed, text)
            flags |= bit
            parts.append(part)
    if record.confirmed_at is not None:
        flags |= _CONFIRMED_AT
        parts.append(_DOUBLE.pack(record.confirmed_at))
    if record.lease_until:
        flags |= _LEASE
        parts.append(_DOUBLE.pack(record.lease_until))
    if record.attempts:
        flags |= _ATTEMPTS
        parts.append(_INT.pack(record.attempts))
    if record.error_code is not None:
        flags |= _ERROR_CODE
        parts.append(_INT.pack(record.error_code))
    message = clip_error_message(record.error_message)
    if message is not None:
        raw = message.encode()
        flags |= _ERROR_MESSAGE
        parts.append(len(raw).to_bytes(2, "big") + raw)
    if record.country is not None:
        raw = record.country.encode()
        flags |= _COUNTRY
        parts.append(len(raw).to_bytes(1, "big") + raw)
    if record.sender is not None:
        bit, part = _sid(record.sender, _SENDER_PACKED, _SENDER_TEXT)
        flags |= bit
        parts.append(part)
    head = _HEAD.pack(_FORMAT, flags, record.expires_at, record.created_at)
    return head + b"".join(parts)


def unpack_record(tracking_id: str, value: bytes) -> Record:
    """The record ``tracking_id`` stored as ``value`` (:func:`pack_record`'s inverse)."""
    form, flags, expires_at, created_at = _HEAD.unpack_from(value)
    if form != _FORMAT:
        raise ValueError(f"unknown Redis record format {form} (a newer twilio-feedback?)")
    data: dict[str, Any] = {
        "tracking_id": tracking_id,
        "state": _STATES[flags & 3],
        "expires_at": expires_at,
        "created_at": created_at,
    }
    pos = _HEAD.size

    def text(width: int) -> str:
        nonlocal pos
        size = int.from_bytes(value[pos : pos + width], "big")
        pos += width + size
        return value[pos - size : pos].decode()

    for name, packed, as_text in (
        ("message_sid", _MESSAGE_PACKED, _MESSAGE_TEXT),
        ("account_sid", _ACCOUNT_PACKED, _ACCOUNT_TEXT),
    ):
        if flags & packed:
            data[name] = value[pos : pos + 2].decode() + value[pos + 2 : pos + 18].hex()
            pos += 18
        elif flags & as_text:
            data[name] = text(2)
    for name, bit, shape in (
        ("confirmed_at", _CONFIRMED_AT, _DOUBLE),
        ("lease_until", _LEASE, _DOUBLE),
        ("attempts", _ATTEMPTS, _INT),
        ("error_code", _ERROR_CODE, _INT),
    ):
        if flags & bit:
            (data[name],) = shape.unpack_from(value, pos)
            pos += shape.size
    if flags & _ERROR_MESSAGE:
        data["error_message"] = text(2)
    if flags & _COUNTRY:
        data["country"] = text(1)
    if flags & _SENDER_PACKED:
        data["sender"] = value[pos : pos + 2].decode() + value[pos + 2 : pos + 18].hex()
    elif flags & _SENDER_TEXT:
        data["sender"] = text(2)
    return Record(**data)


def _pairs(reply: Any) -> list[tuple[Any, Any]]:
    if isinstance(reply, dict):  # RESP3 answers HGETALL with a map
        return list(reply.items())
    items = list(reply or [])
    return list(zip(items[::2], items[1::2], strict=True))


def _unpack(tracking_id: str, value: Any) -> Record | None:
    return None if value is None or value is False else unpack_record(tracking_id, value)


def _field(value: Any) -> Any:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else value


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can namespace a store's keys; raise ConfigurationError if not.

    Refused: an empty prefix (the store's keys would mix with every other key in the
    database, and its scans would read them) and one that is not valid Unicode (it cannot
    be encoded into a key). Glob characters (``*?[]\\``) are fine: scans escape them.
    """
    if not isinstance(prefix, str) or not prefix:
        raise ConfigurationError(
            "the Redis store needs a non-empty key prefix (default 'twilio_feedback:'): "
            "without one its keys mix with every other key in the database"
        )
    try:
        prefix.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(
            f"the Redis key prefix {prefix!r} is not valid Unicode and cannot be a key"
        ) from None
    return prefix


def glob_escape(text: str) -> str:
    """``text`` as a Redis glob pattern (``SCAN MATCH``) that matches only itself."""
    return "".join("\\" + char if char in _GLOB_SPECIAL else char for char in text)


def _split_prefix(url: str, prefix: str) -> tuple[str, str]:
    """Take our own ``?prefix=`` out of a URL; redis-py would pass it to the connection."""
    base, _, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(name == "prefix" for name, _ in pairs):
        return url, prefix
    prefix = [value for name, value in pairs if name == "prefix"][-1]
    kept = urlencode([(name, value) for name, value in pairs if name != "prefix"])
    return (f"{base}?{kept}" if kept else base), prefix


class RedisStore(BaseStore, InsightsStore):
    """A :class:`~twilio_feedback.stores.Store` in Redis.

    Pass a URL (``redis://host:6379/0``, ``rediss://...``, ``unix:///path.sock?db=0``) or
    an existing ``redis.Redis`` client to share your app's pool (the store then never
    closes it; pass ``async_client=`` too for a native async twin). ``prefix`` namespaces
    the keys (in a URL: ``?prefix=myapp:``). ``connect_timeout`` and ``socket_timeout``
    bound how long a request waits for a Redis that is down or stuck (in a URL,
    ``?socket_connect_timeout=`` and ``?socket_timeout=`` win).

    Built from a plain ``redis://`` URL with hiredis installed, the operations run over
    lean blocking connections (``stores/_resp.py``); ``client`` serves the operator's
    scans and the insights, and every operation for another kind of URL or without hiredis.

    Every operation is one round trip (a Lua script, or a ``MULTI`` for :meth:`add` and
    :meth:`delete`); :meth:`renew` takes one per 1,000 records held, and :meth:`claim`
    never SCANs. Redis deletes expired records by itself, on its own clock
    (:attr:`expires_by_itself`): :meth:`purge` drops the outbox entries they leave behind
    and returns how many. The operator's commands (:meth:`counts`, :meth:`list_records`,
    :meth:`requeue_failed`) SCAN this store's keys.

    The conversion insights (:class:`~twilio_feedback.stores.InsightsStore`) are one hash
    of counts a day (``<prefix>i:<day number>``, never expiring), counted by the same
    ``MULTI`` or script as the change they count: a confirm is still one round trip.
    """

    expires_by_itself = True

    def __init__(
        self,
        url_or_client: str | redis_lib.Redis,
        *,
        prefix: str = "twilio_feedback:",
        connect_timeout: float = 2.0,
        socket_timeout: float = 2.0,
        async_client: redis_async.Redis | None = None,
    ) -> None:
        redis = _redis()
        if isinstance(url_or_client, str):
            url, prefix = _split_prefix(url_or_client, prefix)
            self.url: str | None = url
            self.client: redis_lib.Redis = redis.Redis.from_url(
                url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout
            )
            self._owns_client = True
        else:
            self.url = None
            self.client = url_or_client
            self._owns_client = False
        self.async_client = async_client
        self.prefix = check_prefix(prefix)
        self.connect_timeout = connect_timeout
        self.socket_timeout = socket_timeout
        self.outbox = f"{prefix}outbox"
        self._lean: SyncRespClient | None = _lean_sync_client(self)
        scripts: redis_lib.Redis | SyncRespClient = self._lean or self.client
        self._confirm = scripts.register_script(_CONFIRM)
        self._claim = scripts.register_script(_CLAIM)
        self._attach_sid = scripts.register_script(_ATTACH_SID)
        self._outcome_script = scripts.register_script(_OUTCOME)
        self._renew = scripts.register_script(_RENEW)
        self._purge_outbox = scripts.register_script(_PURGE_OUTBOX)
        self._requeue = scripts.register_script(_REQUEUE)
        self._read = scripts.register_script(_READ)
        self._delete = scripts.register_script(_DELETE)
        self.insights_prefix = f"{prefix}i:"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStore:
        """Build from a ``redis://``, ``rediss://`` or ``unix://`` URL."""
        return cls(url, **options)

    def __repr__(self) -> str:
        where = redact_url(self.url) if self.url is not None else repr(self.client)
        return f"RedisStore({where!r}, prefix={self.prefix!r})"

    def key(self, tracking_id: str) -> str:
        """The Redis key of a record."""
        return f"{self.prefix}r:{tracking_id}"

    # -- the Store protocol ----------------------------------------------------------

    def add(self, record: Record) -> None:
        if self._lean is not None:
            self._lean.transaction(_add_commands(self, record))
            return
        with self.client.pipeline(transaction=True) as pipe:
            _queue_add(pipe, self, record)
            pipe.execute()

    def get(self, tracking_id: str) -> Record | None:
        return _unpack(tracking_id, self._read(keys=[self.key(tracking_id)])[0])

    def _values(self, keys: Sequence[str]) -> list[tuple[str, bytes]]:
        """The packed value of every key that holds a record (either format), by id."""
        start = len(f"{self.prefix}r:")
        values = self._read(keys=list(keys)) if keys else []
        return [(key[start:], value) for key, value in zip(keys, values, strict=True) if value]

    def attach_sid(
        self, tracking_id: str, message_sid: str, account_sid: str | None
    ) -> Record | None:
        keys = [self.key(tracking_id), self.outbox]
        args = [tracking_id, message_sid, account_sid or ""]
        return _unpack(tracking_id, self._attach_sid(keys=keys, args=args))

    def delete(self, tracking_id: str) -> None:
        keys = [self.key(tracking_id), self.outbox]
        self._delete(keys=keys, args=[tracking_id, self.insights_prefix])

    def confirm(
        self, tracking_id: str, *, now: float, lease_until: float, keep_until: float
    ) -> tuple[bool, Record | None]:
        reply = self._confirm(
            keys=[self.key(tracking_id), self.outbox],
            args=[
                repr(now),
                repr(lease_until),
                repr(keep_until),
                tracking_id,
                self.insights_prefix,
            ],
        )
        return bool(reply[0]), _unpack(tracking_id, reply[1]) if len(reply) > 1 else None

    def claim(self, *, now: float, lease_until: float, limit: int) -> list[Record]:
        rows = self._claim(
            keys=[self.outbox], args=[repr(now), repr(lease_until), limit, f"{self.prefix}r:"]
        )
        pairs = zip(rows[::2], rows[1::2], strict=True)
        return [unpack_record(_text(tracking_id), value) for tracking_id, value in pairs]

    def renew(self, held: Sequence[tuple[str, str]], *, lease_until: float) -> int:
        pairs = list(held)
        count = 0
        for first in range(0, len(pairs), _RENEW_BATCH):
            args: list[Any] = [repr(lease_until), f"{self.prefix}r:"]
            for tracking_id, message_sid in pairs[first : first + _RENEW_BATCH]:
                args += [tracking_id, message_sid]
            count += int(self._renew(keys=[self.outbox], args=args))
        return count

    def _outcome(self, tracking_id: str, message_sid: str, changes: Mapping[str, Any]) -> bool:
        action = "rem" if "state" in changes else "lease"
        args: list[Any] = [tracking_id, message_sid, action, self.insights_prefix]
        for name, value in changes.items():
            args += [name, _field(value)]
        keys = [self.key(tracking_id), self.outbox]
        return bool(int(self._outcome_script(keys=keys, args=args)))

    def purge(self, *, now: float) -> int:
        removed = offset = 0
        while True:
            gone, seen = self._purge_outbox(
                keys=[self.outbox], args=[offset, _BATCH, f"{self.prefix}r:"]
            )
            removed += int(gone)
            offset += int(seen) - int(gone)
            if int(seen) < _BATCH:
                return removed

    def counts(self) -> dict[str, int]:
        result = {state.value: 0 for state in State}
        for keys in self._key_batches():
            for _, value in self._values(keys):
                state = _STATES[value[2] & 3]  # the flags' low byte
                result[state.value] += 1
        return result

    def oldest_unreported(self) -> float | None:
        """See :meth:`HealthStore.oldest_unreported`: reads the outbox (its entries, then
        their records, in batches), no SCAN of the keys."""
        oldest: float | None = None
        ids = [_text(raw) for raw, _ in self.client.zscan_iter(self.outbox, count=_BATCH)]
        for first in range(0, len(ids), _BATCH):
            keys = [self.key(tracking_id) for tracking_id in ids[first : first + _BATCH]]
            for tracking_id, value in self._values(keys):
                record = unpack_record(tracking_id, value)
                if record.state is not State.CONFIRMED or record.message_sid is None:
                    continue
                if record.confirmed_at is None:
                    continue
                at = record.confirmed_at
                oldest = at if oldest is None else min(oldest, at)
        return oldest

    def insight_cells(self, since: date, until: date) -> list[Cell]:
        """See :meth:`InsightsStore.insight_cells`: one hash of counts a day (``HGETALL``
        of each day in the span, pipelined; a span longer than 400 days SCANs the
        insights' keys instead)."""
        first, last = (since - EPOCH).days, (until - EPOCH).days
        if last < first:
            return []
        if last - first < _INSIGHTS_SCAN_DAYS:
            days = list(range(first, last + 1))
        else:
            days = []
            start = self.insights_prefix
            for raw in self.client.scan_iter(match=glob_escape(start) + "*", count=_BATCH):
                rest = _text(raw)[len(start) :]
                if rest.lstrip("-").isdigit() and first <= int(rest) <= last:
                    days.append(int(rest))
        width = len(COUNTS) + len(TTC_BUCKETS)
        cells: list[Cell] = []
        for offset in range(0, len(days), _BATCH):
            batch = days[offset : offset + _BATCH]
            with self.client.pipeline(transaction=False) as pipe:
                for day in batch:
                    pipe.hgetall(f"{self.insights_prefix}{day}")
                replies = pipe.execute()
            for day, reply in zip(batch, replies, strict=True):
                counts: dict[tuple[str, str], list[int]] = {}
                for field, value in _pairs(reply):
                    index, country, sender = _text(field).split(":", 2)
                    row = counts.setdefault((country, sender), [0] * width)
                    row[int(index)] = int(value)
                for (country, sender), row in counts.items():
                    cells.append(cell_from_counts(day, country, sender, row))
        return cells

    def close(self) -> None:
        """Close the connection pool if this store created it."""
        if self._owns_client:
            self.client.close()
        if self._lean is not None:
            self._lean.close()

    # -- operator commands (AdminStore) ------------------------------------------------

    def _key_batches(self) -> Iterator[list[str]]:
        # The prefix is escaped: "app*:" must not match "app1:"'s keys. Tracking ids never
        # hold a ':', so a key with one after our "<prefix>r:" belongs to another store
        # whose prefix starts with ours ("app:" and "app:r:"); the scripts read their
        # outboxes (sorted sets) as no record. No TYPE filter: records are strings, or
        # hashes when an older version wrote them.
        start = f"{self.prefix}r:"
        batch: list[str] = []
        for raw in self.client.scan_iter(match=glob_escape(start) + "*", count=_BATCH):
            key = _text(raw)
            if ":" in key[len(start) :]:
                continue
            batch.append(key)
            if len(batch) >= _BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    def list_records(self, state: State, *, limit: int) -> list[Record]:
        wanted = State(state)
        found: list[Record] = []
        for keys in self._key_batches():
            for tracking_id, value in self._values(keys):
                if _STATES[value[2] & 3] is wanted:
                    found.append(unpack_record(tracking_id, value))
        found.sort(key=lambda record: record.created_at, reverse=True)
        return found[:limit]

    def requeue_failed(self, *, now: float, keep_until: float) -> int:
        count = 0
        for keys in self._key_batches():
            count += int(
                self._requeue(
                    keys=[self.outbox, *keys],
                    args=[
                        repr(now),
                        repr(keep_until),
                        len(f"{self.prefix}r:".encode()),
                        self.insights_prefix,
                    ],
                )
            )
        return count

    # -- async -----------------------------------------------------------------------

    def as_async(self) -> AsyncStore:
        """The async twin: native on ``redis.asyncio`` when this store was built from a
        URL or given ``async_client=``; otherwise the sync client in a worker thread."""
        if self.url is None and self.async_client is None:
            return ThreadedAsyncStore(self)
        return AsyncRedisStore(self)


def _add_commands(store: RedisStore, record: Record) -> list[tuple[Any, ...]]:
    """The commands :meth:`RedisStore.add` runs in one ``MULTI``."""
    key = store.key(record.tracking_id)
    at = int(record.expires_at * 1000)
    commands: list[tuple[Any, ...]] = []
    if at > 0:
        commands.append(("SET", key, pack_record(record), "PXAT", at))
    else:  # expired long ago (SET refuses a time <= 0)
        commands.append(("DEL", key))
    if record.state is State.CONFIRMED and record.message_sid:
        commands.append(("ZADD", store.outbox, repr(record.lease_until), record.tracking_id))
    else:
        commands.append(("ZREM", store.outbox, record.tracking_id))
    if record.country is not None:
        field = f"{_SENT}:{record.country}:{record.sender or UNKNOWN_SENDER}"
        day = f"{store.insights_prefix}{day_number(record.created_at)}"
        commands.append(("HINCRBY", day, field, 1))
    return commands


def _queue_add(pipe: Any, store: RedisStore, record: Record) -> None:
    for command in _add_commands(store, record):
        pipe.execute_command(*command)


def _lean_options(store: RedisStore) -> dict[str, Any] | None:
    """The lean clients' options for the store's URL (see ``stores/_resp.py``), or
    ``None`` where redis-py serves: a client given, hiredis missing, a URL other than a
    plain ``redis://`` one, or options only redis-py knows."""
    if store.url is None:
        return None
    try:
        from ._resp import lean_options
    except ImportError:  # hiredis is not installed
        return None
    return lean_options(store.url)


def _lean_client(store: RedisStore) -> RespClient | None:
    """The async twin's lean client, or ``None`` (see :func:`_lean_options`)."""
    options = _lean_options(store)
    if options is None:
        return None
    from ._resp import RespClient

    return RespClient(options, timeout=store.socket_timeout, connect_timeout=store.connect_timeout)


def _lean_sync_client(store: RedisStore) -> SyncRespClient | None:
    """The sync store's lean client, or ``None`` (see :func:`_lean_options`)."""
    options = _lean_options(store)
    if options is None:
        return None
    from ._resp import SyncRespClient

    return SyncRespClient(
        options, timeout=store.socket_timeout, connect_timeout=store.connect_timeout
    )


class AsyncRedisStore(AsyncStore):
    """The async operations the tracker needs, sharing the sync store's keys and scripts.
    Built by :meth:`RedisStore.as_async`.

    On a store built from a plain ``redis://`` URL with hiredis installed, the calls go
    through a lean pipelined connection (``stores/_resp.py``); with ``async_client=``,
    another kind of URL or without hiredis, through ``redis.asyncio``.
    """

    def __init__(self, store: RedisStore) -> None:
        import redis.asyncio

        self.store = store
        self._lean: RespClient | None = None
        self._redis: redis_async.Redis | None = None
        if store.async_client is not None:
            self._redis = store.async_client
            self._owns_client = False
        elif store.url is None:
            raise ValueError("the store was given a client: pass async_client= as well")
        else:
            self._lean = _lean_client(store)
            if self._lean is None:
                self._redis = redis.asyncio.Redis.from_url(
                    store.url,
                    socket_timeout=store.socket_timeout,
                    socket_connect_timeout=store.connect_timeout,
                )
            self._owns_client = True
        client = self._lean or self._redis
        assert client is not None
        self.client: redis_async.Redis | RespClient = client
        self._connection_error: type[Exception] = redis.exceptions.ConnectionError
        self._confirm = self.client.register_script(_CONFIRM)
        self._delete = self.client.register_script(_DELETE)
        self._attach_sid = self.client.register_script(_ATTACH_SID)

    async def _run(self, operation: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await operation()
        except self._connection_error:
            # After a Redis restart, redis.asyncio hands out the pooled connections the
            # server closed, and each fails its next command: its pool check is skipped
            # while maintenance notifications are "auto" (redis-py's default), and cannot
            # see an EOF the event loop has not read yet. The sync client reconnects by
            # itself. Drop the idle connections and try once more on fresh ones (the lean
            # client has dropped its failed connection already): every operation here
            # can be repeated (a confirm that did run the first time finds its record
            # confirmed, a duplicate, and the sweep reports it).
            if self._redis is not None:
                await self._redis.connection_pool.disconnect(inuse_connections=False)
            return await operation()

    async def add(self, record: Record) -> None:
        lean = self._lean
        if lean is not None:
            commands = _add_commands(self.store, record)
            await self._run(lambda: lean.transaction(commands))
            return
        client = self._redis
        assert client is not None

        async def add() -> None:
            async with client.pipeline(transaction=True) as pipe:
                _queue_add(pipe, self.store, record)
                await pipe.execute()

        await self._run(add)

    async def attach_sid(
        self, tracking_id: str, message_sid: str, account_sid: str | None
    ) -> Record | None:
        keys = [self.store.key(tracking_id), self.store.outbox]
        args = [tracking_id, message_sid, account_sid or ""]
        return _unpack(tracking_id, await self._run(lambda: self._attach_sid(keys=keys, args=args)))

    async def delete(self, tracking_id: str) -> None:

        keys = [self.store.key(tracking_id), self.store.outbox]
        args = [tracking_id, self.store.insights_prefix]
        await self._run(lambda: self._delete(keys=keys, args=args))

    async def confirm(
        self, tracking_id: str, *, now: float, lease_until: float, keep_until: float
    ) -> tuple[bool, Record | None]:
        keys = [self.store.key(tracking_id), self.store.outbox]
        args = [
            repr(now),
            repr(lease_until),
            repr(keep_until),
            tracking_id,
            self.store.insights_prefix,
        ]
        reply = await self._run(lambda: self._confirm(keys=keys, args=args))
        return bool(reply[0]), _unpack(tracking_id, reply[1]) if len(reply) > 1 else None

    async def aclose(self) -> None:
        """Close the async connections if this twin made them."""
        if self._owns_client:
            await self.client.aclose()
