-- Give failed records another chance: confirmed again, due at once, error cleared.
-- KEYS: outbox, then record keys. ARGV: now, keep_until, record key prefix length.
-- Returns how many records were re-queued.
local count = 0
for i = 2, #KEYS do
  if redis.call('HGET', KEYS[i], 'state') == 'failed' then
    local expires = redis.call('HGET', KEYS[i], 'expires_at')
    if tonumber(ARGV[2]) > tonumber(expires) then
      redis.call('HSET', KEYS[i], 'expires_at', ARGV[2])
      redis.call('PEXPIREAT', KEYS[i], math.floor(tonumber(ARGV[2]) * 1000))
    end
    redis.call('HSET', KEYS[i], 'state', 'confirmed', 'confirmed_at', ARGV[1],
               'lease_until', '0.0', 'attempts', '0')
    redis.call('HDEL', KEYS[i], 'error_code', 'error_message')
    if redis.call('HEXISTS', KEYS[i], 'message_sid') == 1 then
      redis.call('ZADD', KEYS[1], 0, string.sub(KEYS[i], tonumber(ARGV[3]) + 1))
    end
    count = count + 1
  end
end
return count
