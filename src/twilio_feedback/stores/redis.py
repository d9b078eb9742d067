"""Redis store on redis-py: one hash per record, expiring by itself.

Each record is a hash that Redis expires at the record's ``expires_at`` (``PEXPIREAT``).
Unreported confirmations are indexed in a sorted set scored by lease end, so the sweep
reads due records directly and never SCANs. Every state change that must be atomic
(confirm, claim, SID attachment, the reporter's outcomes) is one Lua script run with
``EVALSHA``: one round trip; the scripts ship as ``.lua`` files in ``stores/lua/``. Only
the operator's commands (counts, listing, re-queueing) SCAN the keys.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlencode

from ..errors import ConfigurationError, MissingDependencyError
from ..records import Record, State
from ..settings import redact_url
from .base import AsyncStore, BaseStore, ThreadedAsyncStore, clip_error_message

if TYPE_CHECKING:
    import redis as redis_lib
    import redis.asyncio as redis_async

__all__ = ["AsyncRedisStore", "RedisStore", "check_prefix", "glob_escape"]

_T = TypeVar("_T")
_INT_FIELDS = {"attempts", "error_code"}
_FLOAT_FIELDS = {"expires_at", "created_at", "confirmed_at", "lease_until"}
_BATCH = 500
_RENEW_BATCH = 1000
_GLOB_SPECIAL = frozenset("*?[]\\")


def _lua(name: str) -> str:
    """The source of a script shipped in ``stores/lua/`` (each says its KEYS and ARGV)."""
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


_CONFIRM = _lua("confirm")
_CLAIM = _lua("claim")
_ATTACH_SID = _lua("attach_sid")
_OUTCOME = _lua("outcome")
_RENEW = _lua("renew")
_PURGE_OUTBOX = _lua("purge_outbox")
_REQUEUE = _lua("requeue")


def _redis() -> Any:
    try:
        import redis
    except ImportError:
        raise MissingDependencyError("redis", "redis", "the Redis store") from None
    return redis


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _flat(reply: Any) -> list[Any]:
    if isinstance(reply, dict):  # RESP3 answers HGETALL with a map
        return [x for pair in reply.items() for x in pair]
    return list(reply or [])


def _decode(reply: Any) -> Record | None:
    flat = _flat(reply)
    if not flat:
        return None
    data: dict[str, Any] = {}
    for name, raw in zip(flat[::2], flat[1::2], strict=True):
        key, value = _text(name), _text(raw)
        if key in _INT_FIELDS:
            data[key] = int(value)
        elif key in _FLOAT_FIELDS:
            data[key] = float(value)
        else:
            data[key] = value
    return Record.from_dict(data)


def _encode(record: Record) -> dict[str, str]:
    if record.error_message:
        record = record.replace(error_message=clip_error_message(record.error_message))
    return {
        k: (repr(v) if isinstance(v, float) else str(v))
        for k, v in record.to_dict().items()
        if v is not None
    }


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


class RedisStore(BaseStore):
    """A :class:`~twilio_feedback.stores.Store` in Redis.

    Pass a URL (``redis://host:6379/0``, ``rediss://...``, ``unix:///path.sock?db=0``) or
    an existing ``redis.Redis`` client to share your app's pool (the store then never
    closes it; pass ``async_client=`` too for a native async twin). ``prefix`` namespaces
    the keys (in a URL: ``?prefix=myapp:``). ``connect_timeout`` and ``socket_timeout``
    bound how long a request waits for a Redis that is down or stuck (in a URL,
    ``?socket_connect_timeout=`` and ``?socket_timeout=`` win).

    Every operation is one round trip (a Lua script, or a ``MULTI`` for :meth:`add` and
    :meth:`delete`); :meth:`renew` takes one per 1,000 records held, and :meth:`claim`
    never SCANs. Redis deletes expired records by itself, on its own clock
    (:attr:`expires_by_itself`): :meth:`purge` drops the outbox entries they leave behind
    and returns how many. The operator's commands (:meth:`counts`, :meth:`list_records`,
    :meth:`requeue_failed`) SCAN this store's keys.
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
        self._confirm = self.client.register_script(_CONFIRM)
        self._claim = self.client.register_script(_CLAIM)
        self._attach_sid = self.client.register_script(_ATTACH_SID)
        self._outcome_script = self.client.register_script(_OUTCOME)
        self._renew = self.client.register_script(_RENEW)
        self._purge_outbox = self.client.register_script(_PURGE_OUTBOX)
        self._requeue = self.client.register_script(_REQUEUE)

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
        with self.client.pipeline(transaction=True) as pipe:
            _queue_add(pipe, self, record)
            pipe.execute()

    def get(self, tracking_id: str) -> Record | None:
        return _decode(self.client.hgetall(self.key(tracking_id)))

    def attach_sid(
        self, tracking_id: str, message_sid: str, account_sid: str | None
    ) -> Record | None:
        keys = [self.key(tracking_id), self.outbox]
        args = [tracking_id, message_sid, account_sid or ""]
        return _decode(self._attach_sid(keys=keys, args=args))

    def delete(self, tracking_id: str) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.key(tracking_id))
            pipe.zrem(self.outbox, tracking_id)
            pipe.execute()

    def confirm(
        self, tracking_id: str, *, now: float, lease_until: float, keep_until: float
    ) -> tuple[bool, Record | None]:
        reply = self._confirm(
            keys=[self.key(tracking_id), self.outbox],
            args=[repr(now), repr(lease_until), repr(keep_until), tracking_id],
        )
        return bool(reply[0]), _decode(reply[1]) if len(reply) > 1 else None

    def claim(self, *, now: float, lease_until: float, limit: int) -> list[Record]:
        rows = self._claim(
            keys=[self.outbox], args=[repr(now), repr(lease_until), limit, f"{self.prefix}r:"]
        )
        return [record for record in map(_decode, rows) if record is not None]

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
        args: list[Any] = [tracking_id, message_sid, "rem" if "state" in changes else "lease"]
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
            with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hget(key, "state")
                for state in pipe.execute():
                    if state is not None:
                        result[_text(state)] = result.get(_text(state), 0) + 1
        return result

    def oldest_unreported(self) -> float | None:
        """See :meth:`HealthStore.oldest_unreported`: reads the outbox (its entries, then
        two fields of each record, in pipelined batches), no SCAN of the keys."""
        oldest: float | None = None
        ids = [_text(raw) for raw, _ in self.client.zscan_iter(self.outbox, count=_BATCH)]
        for first in range(0, len(ids), _BATCH):
            with self.client.pipeline(transaction=False) as pipe:
                for tracking_id in ids[first : first + _BATCH]:
                    pipe.hmget(self.key(tracking_id), "state", "confirmed_at", "message_sid")
                for state, confirmed_at, message_sid in pipe.execute():
                    if state is None or _text(state) != State.CONFIRMED.value:
                        continue
                    if message_sid is None or confirmed_at is None:
                        continue
                    at = float(confirmed_at)
                    oldest = at if oldest is None else min(oldest, at)
        return oldest

    def close(self) -> None:
        """Close the connection pool if this store created it."""
        if self._owns_client:
            self.client.close()

    # -- operator commands (AdminStore) ------------------------------------------------

    def _key_batches(self) -> Iterator[list[str]]:
        # The prefix is escaped: "app*:" must not match "app1:"'s keys. Tracking ids never
        # hold a ':', so a key with one after our "<prefix>r:" belongs to another store
        # whose prefix starts with ours ("app:" and "app:r:"); TYPE skips their outboxes.
        start = f"{self.prefix}r:"
        batch: list[str] = []
        for raw in self.client.scan_iter(
            match=glob_escape(start) + "*", count=_BATCH, _type="hash"
        ):
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
            with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(key)
                for reply in pipe.execute():
                    record = _decode(reply)
                    if record is not None and record.state is wanted:
                        found.append(record)
        found.sort(key=lambda record: record.created_at, reverse=True)
        return found[:limit]

    def requeue_failed(self, *, now: float, keep_until: float) -> int:
        count = 0
        for keys in self._key_batches():
            count += int(
                self._requeue(
                    keys=[self.outbox, *keys],
                    args=[repr(now), repr(keep_until), len(f"{self.prefix}r:".encode())],
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


def _queue_add(pipe: Any, store: RedisStore, record: Record) -> None:
    key = store.key(record.tracking_id)
    pipe.delete(key)
    pipe.hset(key, mapping=_encode(record))
    pipe.pexpireat(key, int(record.expires_at * 1000))
    if record.state is State.CONFIRMED and record.message_sid:
        pipe.zadd(store.outbox, {record.tracking_id: record.lease_until})
    else:
        pipe.zrem(store.outbox, record.tracking_id)


class AsyncRedisStore(AsyncStore):
    """The async operations the tracker needs, on ``redis.asyncio``, sharing the sync
    store's keys and scripts. Built by :meth:`RedisStore.as_async`."""

    def __init__(self, store: RedisStore) -> None:
        import redis.asyncio

        self.store = store
        if store.async_client is not None:
            self.client: redis_async.Redis = store.async_client
            self._owns_client = False
        elif store.url is None:
            raise ValueError("the store was given a client: pass async_client= as well")
        else:
            self.client = redis.asyncio.Redis.from_url(
                store.url,
                socket_timeout=store.socket_timeout,
                socket_connect_timeout=store.connect_timeout,
            )
            self._owns_client = True
        self._connection_error: type[Exception] = redis.exceptions.ConnectionError
        self._confirm = self.client.register_script(_CONFIRM)
        self._attach_sid = self.client.register_script(_ATTACH_SID)

    async def _run(self, operation: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await operation()
        except self._connection_error:
            # After a Redis restart, redis.asyncio hands out the pooled connections the
            # server closed, and each fails its next command: its pool check is skipped
            # while maintenance notifications are "auto" (redis-py's default), and cannot
            # see an EOF the event loop has not read yet. The sync client reconnects by
            # itself. Drop the idle connections and try once more on fresh ones: every
            # operation here can be repeated (a confirm that did run the first time finds
            # its record confirmed, a duplicate, and the sweep reports it).
            await self.client.connection_pool.disconnect(inuse_connections=False)
            return await operation()

    async def add(self, record: Record) -> None:

        async def add() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                _queue_add(pipe, self.store, record)
                await pipe.execute()

        await self._run(add)

    async def attach_sid(
        self, tracking_id: str, message_sid: str, account_sid: str | None
    ) -> Record | None:
        keys = [self.store.key(tracking_id), self.store.outbox]
        args = [tracking_id, message_sid, account_sid or ""]
        return _decode(await self._run(lambda: self._attach_sid(keys=keys, args=args)))

    async def delete(self, tracking_id: str) -> None:

        async def delete() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(self.store.key(tracking_id))
                pipe.zrem(self.store.outbox, tracking_id)
                await pipe.execute()

        await self._run(delete)

    async def confirm(
        self, tracking_id: str, *, now: float, lease_until: float, keep_until: float
    ) -> tuple[bool, Record | None]:
        keys = [self.store.key(tracking_id), self.store.outbox]
        args = [repr(now), repr(lease_until), repr(keep_until), tracking_id]
        reply = await self._run(lambda: self._confirm(keys=keys, args=args))
        return bool(reply[0]), _decode(reply[1]) if len(reply) > 1 else None

    async def aclose(self) -> None:
        """Close the async pool if this twin created it."""
        if self._owns_client:
            await self.client.aclose()
