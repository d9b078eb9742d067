-- The heartbeat: extend (never shorten) the leases of the confirmed records a reporter
-- holds. KEYS: outbox. ARGV: lease_until, record key prefix, then tracking id / message
-- SID pairs. Returns how many records are held.
local lease = tonumber(ARGV[1])
local count = 0
for i = 3, #ARGV, 2 do
  local key = ARGV[2] .. ARGV[i]
  local current = redis.call('HMGET', key, 'state', 'message_sid', 'lease_until')
  if current[1] == 'confirmed' and current[2] == ARGV[i + 1] then
    count = count + 1
    if (tonumber(current[3]) or 0) < lease then
      redis.call('HSET', key, 'lease_until', ARGV[1])
      redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
    end
  end
end
return count
