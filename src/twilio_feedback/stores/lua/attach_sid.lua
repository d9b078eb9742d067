-- Attach the message and account SIDs to an existing record (never resurrect an expired
-- one); a record confirmed before its SID was known enters the outbox now.
-- KEYS: record, outbox. ARGV: tracking id, message SID, account SID ('' for none).
-- Returns the record, or nil when it is gone.
local r = load(KEYS[1])
if not r then return false end
r.message_sid = sid_of(ARGV[2])
if ARGV[3] == '' then r.account_sid = nil else r.account_sid = sid_of(ARGV[3]) end
local v = save(KEYS[1], r)
if r.state == 'confirmed' then redis.call('ZADD', KEYS[2], r.lease_until, ARGV[1]) end
return v
