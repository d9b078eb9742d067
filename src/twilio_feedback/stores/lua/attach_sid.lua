-- Attach the message and account SIDs to an existing record (never resurrect an expired
-- one); a record confirmed before its SID was known enters the outbox now.
-- KEYS: record, outbox. ARGV: tracking id, message SID, account SID ('' for the
-- settings' own: the field is left out).
-- Returns the record, or an empty list when it is gone.
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
if ARGV[3] == '' then
  redis.call('HSET', KEYS[1], 'message_sid', ARGV[2])
  redis.call('HDEL', KEYS[1], 'account_sid')
else
  redis.call('HSET', KEYS[1], 'message_sid', ARGV[2], 'account_sid', ARGV[3])
end
if redis.call('HGET', KEYS[1], 'state') == 'confirmed' then
  redis.call('ZADD', KEYS[2], redis.call('HGET', KEYS[1], 'lease_until') or 0, ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
