-- Claim: lease due confirmations (lease ended at or before now) to the caller.
-- KEYS: outbox. ARGV: now, lease_until, limit, record key prefix.
-- Returns the claimed records; drops outbox entries whose record moved on.
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
