-- Drop outbox entries whose record has expired, one batch at a time so that Redis is
-- never blocked for long. KEYS: outbox. ARGV: offset, count, record key prefix.
-- Returns {removed, entries looked at}.
local first = tonumber(ARGV[1])
local ids = redis.call('ZRANGE', KEYS[1], first, first + tonumber(ARGV[2]) - 1)
local removed = 0
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[3] .. id) == 0 then
    redis.call('ZREM', KEYS[1], id)
    removed = removed + 1
  end
end
return {removed, #ids}
