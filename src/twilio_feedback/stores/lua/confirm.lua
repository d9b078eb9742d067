-- Confirm: a live pending record becomes confirmed, leased to the confirming process.
-- KEYS: record, outbox. ARGV: now, lease_until, keep_until, tracking id, insights prefix.
-- Returns {1, record} when this call confirmed it, {0, record} when not, {0} when gone.
local r = load(KEYS[1])
if not r then return {0} end
local now = tonumber(ARGV[1])
if r.state ~= 'pending' or r.expires_at <= now then return {0, encode(r)} end
r.state = 'confirmed'
r.confirmed_at = now
r.lease_until = tonumber(ARGV[2])
if tonumber(ARGV[3]) > r.expires_at then r.expires_at = tonumber(ARGV[3]) end
local v = save(KEYS[1], r)
if r.message_sid then redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4]) end
tally(ARGV[5], r, CONFIRMED)
tally(ARGV[5], r, TTC + ttc_bucket(now - r.created_at))
return {1, v}
