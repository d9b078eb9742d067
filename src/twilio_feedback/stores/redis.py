"""Redis store on redis-py: one hash per record, expiring by itself.

Each record is a hash that Redis expires at the record's ``expires_at``. Unreported
confirmations are indexed in a sorted set scored by lease end, so the sweep reads due
records directly and never SCANs. Every state change that must be atomic (confirm,
claim, SID attachment, the reporter's outcomes) is one Lua script: one round trip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError
from ..records import Record, State

if TYPE_CHECKING:
    import redis as redis_lib
    import redis.asyncio as redis_async

__all__ = ["RedisStore"]

_INT_FIELDS = {"attempts", "error_code"}
_FLOAT_FIELDS = {"expires_at", "created_at", "confirmed_at", "lease_until"}

# KEYS: record, outbox. ARGV: now, lease_until, keep_until, tracking id.
_CONFIRM = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0} end
local expires = redis.call('HGET', KEYS[1], 'expires_at')
if state ~= 'pending' or tonumber(expires) <= tonumber(ARGV[1]) then
  return {0, redis.call('HGETALL', KEYS[1])}
end
local keep = expires
if tonumber(ARGV[3]) > tonumber(expires) then keep = ARGV[3] end
redis.call('HSET', KEYS[1], 'state', 'confirmed', 'confirmed_at', ARGV[1],
           'lease_until', ARGV[2], 'expires_at', keep)
redis.call('PEXPIREAT', KEYS[1], math.floor(tonumber(keep) * 1000))
if redis.call('HEXISTS', KEYS[1], 'message_sid') == 1 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
end
return {1, redis.call('HGETALL', KEYS[1])}
"""

# KEYS: outbox. ARGV: now, lease_until, limit, record key prefix.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[4] .. id
  if redis.call('HGET', key, 'state') == 'confirmed' then
    redis.call('HSET', key, 'lease_until', ARGV[2])
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    table.insert(out, redis.call('HGETALL', key))
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

# Update fields of an existing record (never resurrect an expired one), then keep the
# outbox in step. KEYS: record, outbox. ARGV: tracking id, outbox action ('add', 'rem',
# 'keep'), then field/value pairs; an empty value deletes the field.
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
for i = 3, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i])
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
local state = redis.call('HGET', KEYS[1], 'state')
if ARGV[2] == 'rem' or state ~= 'confirmed' then
  redis.call('ZREM', KEYS[2], ARGV[1])
elseif ARGV[2] == 'add' or redis.call('HEXISTS', KEYS[1], 'message_sid') == 1 then
  redis.call('ZADD', KEYS[2], redis.call('HGET', KEYS[1], 'lease_until') or 0, ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
"""


def _redis() -> Any:
    try:
        import redis
    except ImportError:
        raise MissingDependencyError("redis", "redis", "the Redis store") from None
    return redis


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(flat: list[Any]) -> Record | None:
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
    return {
        k: (repr(v) if isinstance(v, float) else str(v))
        for k, v in record.to_dict().items()
        if v is not None
    }


class RedisStore:
    """A :class:`~twilio_feedback.stores.Store` in Redis.

    Pass a URL (``redis://host:6379/0``, ``rediss://...``, ``unix:///path.sock``) or an
    existing ``redis.Redis`` client to share your app's pool. ``prefix`` namespaces the
    keys; ``socket_timeout`` bounds how long a request waits for a Redis that is down.
    """

    def __init__(
        self,
        url_or_client: str | redis_lib.Redis,
        *,
        prefix: str = "twilio_feedback:",
        socket_timeout: float = 3.0,
    ) -> None:
        redis = _redis()
        if isinstance(url_or_client, str):
            self.url: str | None = url_or_client
            self.client = redis.Redis.from_url(
                url_or_client, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
            )
            self._owns_client = True
        else:
            self.url = None
            self.client = url_or_client
            self._owns_client = False
        self.prefix = prefix
        self.socket_timeout = socket_timeout
        self.outbox = f"{prefix}outbox"
        self._confirm = self.client.register_script(_CONFIRM)
        self._claim = self.client.register_script(_CLAIM)
        self._update_script = self.client.register_script(_UPDATE)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStore:
        """Build from a ``redis://``, ``rediss://`` or ``unix://`` URL."""
        return cls(url, **options)

    def key(self, tracking_id: str) -> str:
        """The Redis key of a record."""
        return f"{self.prefix}r:{tracking_id}"

    def add(self, record: Record) -> None:
        """See :meth:`Store.add`."""
        key = self.key(record.tracking_id)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=_encode(record))
            pipe.pexpireat(key, int(record.expires_at * 1000))
            if record.state is State.CONFIRMED and record.message_sid:
                pipe.zadd(self.outbox, {record.tracking_id: record.lease_until})
            else:
                pipe.zrem(self.outbox, record.tracking_id)
            pipe.execute()

    def get(self, tracking_id: str) -> Record | None:
        """See :meth:`Store.get`."""
        flat = self.client.execute_command("HGETALL", self.key(tracking_id))
        if isinstance(flat, dict):
            flat = [x for pair in flat.items() for x in pair]
        return _decode(flat)

    def _update(self, tracking_id: str, outbox: str, **fields: Any) -> Record | None:
        args: list[Any] = [tracking_id, outbox]
        for name, value in fields.items():
            args += [
                name,
                "" if value is None else (repr(value) if isinstance(value, float) else value),
            ]
        flat = self._update_script(keys=[self.key(tracking_id), self.outbox], args=args)
        return _decode(flat)

    def attach_sid(self, tracking_id: str, message_sid: str, account_sid: str) -> Record | None:
        """See :meth:`Store.attach_sid`."""
        return self._update(tracking_id, "keep", message_sid=message_sid, account_sid=account_sid)

    def delete(self, tracking_id: str) -> None:
        """See :meth:`Store.delete`."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.key(tracking_id))
            pipe.zrem(self.outbox, tracking_id)
            pipe.execute()

    def confirm(
        self, tracking_id: str, *, now: float, lease_until: float, keep_until: float
    ) -> tuple[bool, Record | None]:
        """See :meth:`Store.confirm`: one round trip."""
        reply = self._confirm(
            keys=[self.key(tracking_id), self.outbox],
            args=[repr(now), repr(lease_until), repr(keep_until), tracking_id],
        )
        return bool(reply[0]), _decode(reply[1]) if len(reply) > 1 else None

    def claim(self, *, now: float, lease_until: float, limit: int) -> list[Record]:
        """See :meth:`Store.claim`: one round trip, no SCAN."""
        rows = self._claim(
            keys=[self.outbox], args=[repr(now), repr(lease_until), limit, f"{self.prefix}r:"]
        )
        return [record for record in map(_decode, rows) if record is not None]

    def mark_reported(self, tracking_id: str) -> None:
        """See :meth:`Store.mark_reported`."""
        self._update(tracking_id, "rem", state=State.REPORTED.value, lease_until=0.0)

    def mark_failed(self, tracking_id: str, *, code: int | None, message: str | None) -> None:
        """See :meth:`Store.mark_failed`."""
        self._update(
            tracking_id,
            "rem",
            state=State.FAILED.value,
            lease_until=0.0,
            error_code=code,
            error_message=message,
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
            "keep",
            lease_until=lease_until,
            attempts=attempts,
            error_code=code,
            error_message=message,
        )

    def _keys(self) -> list[str]:
        return [_text(k) for k in self.client.scan_iter(match=f"{self.prefix}r:*", count=1000)]

    def requeue_failed(self) -> int:
        """Turn every ``failed`` record back into ``confirmed`` (an operator's command;
        it SCANs)."""
        count = 0
        for key in self._keys():
            if _text(self.client.hget(key, "state") or b"") == State.FAILED.value:
                tracking_id = key[len(self.prefix) + 2 :]
                if self._update(
                    tracking_id, "add", state=State.CONFIRMED.value, lease_until=0.0, attempts=0
                ):
                    count += 1
        return count

    def purge(self, *, now: float) -> int:
        """Redis expires records by itself; this drops outbox entries whose record is gone."""
        removed = 0
        for member in self.client.zrange(self.outbox, 0, -1):
            tracking_id = _text(member)
            if not self.client.exists(self.key(tracking_id)):
                removed += int(self.client.zrem(self.outbox, tracking_id))
        return removed

    def counts(self) -> dict[str, int]:
        """See :meth:`Store.counts` (an operator's command; it SCANs)."""
        result = {state.value: 0 for state in State}
        keys = self._keys()
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(key, "state")
            for state in pipe.execute():
                if state is not None:
                    result[_text(state)] = result.get(_text(state), 0) + 1
        return result

    def close(self) -> None:
        """Close the connection pool if this store created it."""
        if self._owns_client:
            self.client.close()

    def as_async(self) -> AsyncRedisStore:
        """A native async twin on ``redis.asyncio`` sharing the keys and scripts."""
        return AsyncRedisStore(self)


class AsyncRedisStore:
    """The async operations the tracker needs, on ``redis.asyncio``."""

    def __init__(self, store: RedisStore) -> None:
        import redis.asyncio

        self.store = store
        if store.url is not None:
            self.client: redis_async.Redis = redis.asyncio.Redis.from_url(
                store.url,
                socket_timeout=store.socket_timeout,
                socket_connect_timeout=store.socket_timeout,
            )
        else:
            kwargs = store.client.connection_pool.connection_kwargs
            self.client = redis.asyncio.Redis(
                **{k: v for k, v in kwargs.items() if k not in ("retry",)}
            )
        self._confirm = self.client.register_script(_CONFIRM)
        self._update_script = self.client.register_script(_UPDATE)

    async def add(self, record: Record) -> None:
        """See :meth:`Store.add`."""
        s = self.store
        key = s.key(record.tracking_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=_encode(record))  # type: ignore[arg-type]
            pipe.pexpireat(key, int(record.expires_at * 1000))
            if record.state is State.CONFIRMED and record.message_sid:
                pipe.zadd(s.outbox, {record.tracking_id: record.lease_until})
            else:
                pipe.zrem(s.outbox, record.tracking_id)
            await pipe.execute()

    async def get(self, tracking_id: str) -> Record | None:
        """See :meth:`Store.get`."""
        flat = await self.client.execute_command(  # type: ignore[no-untyped-call]
            "HGETALL", self.store.key(tracking_id)
        )
        if isinstance(flat, dict):
            flat = [x for pair in flat.items() for x in pair]
        return _decode(flat)

    async def attach_sid(
        self, tracking_id: str, message_sid: str, account_sid: str
    ) -> Record | None:
        """See :meth:`Store.attach_sid`."""
        flat = await self._update_script(
            keys=[self.store.key(tracking_id), self.store.outbox],
            args=[tracking_id, "keep", "message_sid", message_sid, "account_sid", account_sid],
        )
        return _decode(flat)

    async def delete(self, tracking_id: str) -> None:
        """See :meth:`Store.delete`."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.store.key(tracking_id))
            pipe.zrem(self.store.outbox, tracking_id)
            await pipe.execute()

    async def confirm(
        self, tracking_id: str, *, now: float, lease_until: float, keep_until: float
    ) -> tuple[bool, Record | None]:
        """See :meth:`Store.confirm`: one round trip."""
        reply = await self._confirm(
            keys=[self.store.key(tracking_id), self.store.outbox],
            args=[repr(now), repr(lease_until), repr(keep_until), tracking_id],
        )
        return bool(reply[0]), _decode(reply[1]) if len(reply) > 1 else None

    async def aclose(self) -> None:
        """Close the async pool."""
        await self.client.aclose()
