-- An outcome of the report of one message: applies only while the record is confirmed
-- with that message SID (a key bound again keeps its new record), never creates one.
-- KEYS: record, outbox. ARGV: tracking id, message SID, outbox action ('rem' or 'lease'),
-- then field/value pairs; an empty value deletes the field. Returns 1 if applied, else 0.
local current = redis.call('HMGET', KEYS[1], 'state', 'message_sid')
if current[1] ~= 'confirmed' or current[2] ~= ARGV[2] then return 0 end
for i = 4, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i])
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
if ARGV[3] == 'rem' then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], redis.call('HGET', KEYS[1], 'lease_until'), ARGV[1])
end
return 1
