-- Give failed records another chance: confirmed again, due at once, error cleared.
-- KEYS: outbox, then record keys. ARGV: now, keep_until, record key prefix length,
-- insights prefix. Returns how many records were re-queued (uncounted as failed).
local count = 0
for i = 2, #KEYS do
  local r = load(KEYS[i])
  if r and r.state == 'failed' then
    if tonumber(ARGV[2]) > r.expires_at then r.expires_at = tonumber(ARGV[2]) end
    tally(ARGV[4], r, FAILED, -1)
    r.state = 'confirmed'
    r.confirmed_at = tonumber(ARGV[1])
    r.lease_until = 0
    r.attempts = 0
    r.error_code = nil
    r.error_message = nil
    save(KEYS[i], r)
    if r.message_sid then
      redis.call('ZADD', KEYS[1], 0, string.sub(KEYS[i], tonumber(ARGV[3]) + 1))
    end
    count = count + 1
  end
end
return count
