-- Delete a record and its outbox entry; a record that never had a message SID (a send
-- Twilio refused) is taken out of the insights' sent count.
-- KEYS: record, outbox. ARGV: tracking id, insights prefix.
local r = load(KEYS[1])
if r and not r.message_sid then tally(ARGV[2], r, SENT, -1) end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 0
