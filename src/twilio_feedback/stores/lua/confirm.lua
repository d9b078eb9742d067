-- Confirm: a live pending record becomes confirmed, leased to the confirming process.
-- KEYS: record, outbox. ARGV: now, lease_until, keep_until, tracking id.
-- Returns {1, record} when this call confirmed it, {0, record} when not, {0} when gone.
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
