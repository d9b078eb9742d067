-- The heartbeat: extend (never shorten) the leases of the confirmed records a reporter
-- holds. KEYS: outbox. ARGV: lease_until, record key prefix, then tracking id / message
-- SID pairs. Returns how many records are held.
local lease = tonumber(ARGV[1])
local count = 0
for i = 3, #ARGV, 2 do
  local key = ARGV[2] .. ARGV[i]
  local r = load(key)
  if r and r.state == 'confirmed' and r.message_sid == sid_of(ARGV[i + 1]) then
    count = count + 1
    if r.lease_until < lease then
      r.lease_until = lease
      save(key, r)
      redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
    end
  end
end
return count
