-- An outcome of the report of one message: applies only while the record is confirmed
-- with that message SID (a key bound again keeps its new record), never creates one.
-- KEYS: record, outbox. ARGV: tracking id, message SID, outbox action ('rem' or 'lease'),
-- insights prefix, then field/value pairs; an empty value clears the field. Returns 1 if
-- applied, else 0. A new state reported or failed is counted in the insights.
local NUMBERS = {lease_until = true, attempts = true, error_code = true}
local r = load(KEYS[1])
if not r or r.state ~= 'confirmed' or r.message_sid ~= sid_of(ARGV[2]) then return 0 end
for i = 5, #ARGV, 2 do
  local value = ARGV[i + 1]
  if value == '' then value = nil elseif NUMBERS[ARGV[i]] then value = tonumber(value) end
  r[ARGV[i]] = value
end
save(KEYS[1], r)
if r.state == 'reported' then tally(ARGV[4], r, REPORTED) end
if r.state == 'failed' then tally(ARGV[4], r, FAILED) end
if ARGV[3] == 'rem' then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], r.lease_until or 0, ARGV[1])
end
return 1
