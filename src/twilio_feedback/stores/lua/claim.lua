-- Claim: lease due confirmations (lease ended at or before now) to the caller.
-- KEYS: outbox. ARGV: now, lease_until, limit, record key prefix.
-- Returns tracking id / record pairs; drops outbox entries whose record moved on.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[4] .. id
  local r = load(key)
  if r and r.state == 'confirmed' then
    r.lease_until = tonumber(ARGV[2])
    out[#out + 1] = id
    out[#out + 1] = save(key, r)
    redis.call('ZADD', KEYS[1], ARGV[2], id)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
