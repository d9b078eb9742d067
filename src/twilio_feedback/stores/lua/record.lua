-- Shared by every script (prepended to each): records as one packed string, and the
-- hashes that twilio-feedback 0.1 wrote, read as well and rewritten packed when touched.
--
-- A record's value (big-endian), the same layout as redis.py's pack_record/unpack_record:
--   B format (1), H flags, d expires_at, d created_at, then, only when its flag is set and
--   in this order: message SID, account SID (each either packed, 2 letters + 16 raw bytes
--   for the 32 hex digits, or as text: H length + bytes), d confirmed_at, d lease_until,
--   i4 attempts, i4 error_code, H length + error message, B length + country, sender
--   (packed or text, as the SIDs). The tracking id is in the key; zero lease and attempts
--   are left out.
-- Flags: bits 0-1 the state (0 pending, 1 confirmed, 2 reported, 3 failed); then one bit a
-- field: 4 message SID packed, 8 message SID text, 16 account SID packed, 32 account SID
-- text, 64 confirmed_at, 128 lease_until, 256 attempts, 512 error_code, 1024 error
-- message, 2048 country, 4096 sender packed, 8192 sender text.
local STATES = {'pending', 'confirmed', 'reported', 'failed'}
local STATE_CODES = {pending = 0, confirmed = 1, reported = 2, failed = 3}

local function has(flags, bit) return math.floor(flags / bit) % 2 == 1 end

-- In a script, a SID (message, account, sender) is kept as it is stored, so that a
-- record read and written again is not converted: 'p' and its 18 packed bytes, or 't'
-- and its length-prefixed text. sid_of turns a SID into that form (to compare with one,
-- or to store it), sid_text back into the SID.
local function sid_of(text)
  if #text == 34 and text:find('^%u%u[0-9a-f]+$') then
    return 'p' .. text:sub(1, 2) .. text:sub(3):gsub('..', function(h)
      return string.char(tonumber(h, 16))
    end)
  end
  return 't' .. struct.pack('>Hc0', #text, text)
end

local function sid_text(sid)
  if sid:sub(1, 1) == 't' then return sid:sub(4) end
  return sid:sub(2, 3) .. sid:sub(4):gsub('.', function(c)
    return string.format('%02x', string.byte(c))
  end)
end

local function decode(v)
  local format, flags, expires_at, created_at, pos = struct.unpack('>BHdd', v)
  if format ~= 1 then error('twilio_feedback: unknown record format ' .. format) end
  local r = {state = STATES[flags % 4 + 1], expires_at = expires_at, created_at = created_at,
             lease_until = 0, attempts = 0}
  local function sid(packed, text)
    local size
    if has(flags, packed) then
      size = 18
    elseif has(flags, text) then
      size = 2 + struct.unpack('>H', v, pos)
    else
      return nil
    end
    pos = pos + size
    return (has(flags, packed) and 'p' or 't') .. v:sub(pos - size, pos - 1)
  end
  r.message_sid = sid(4, 8)
  r.account_sid = sid(16, 32)
  if has(flags, 64) then r.confirmed_at, pos = struct.unpack('>d', v, pos) end
  if has(flags, 128) then r.lease_until, pos = struct.unpack('>d', v, pos) end
  if has(flags, 256) then r.attempts, pos = struct.unpack('>i4', v, pos) end
  if has(flags, 512) then r.error_code, pos = struct.unpack('>i4', v, pos) end
  if has(flags, 1024) then r.error_message, pos = struct.unpack('>Hc0', v, pos) end
  if has(flags, 2048) then r.country, pos = struct.unpack('>Bc0', v, pos) end
  r.sender = sid(4096, 8192)
  return r
end

local function encode(r)
  local flags = STATE_CODES[r.state]
  local parts = {}
  local function add(bit, part)
    flags = flags + bit
    parts[#parts + 1] = part
  end
  local function sid(s, packed, text)
    if s == nil then return end
    if s:sub(1, 1) == 'p' then add(packed, s:sub(2)) else add(text, s:sub(2)) end
  end
  sid(r.message_sid, 4, 8)
  sid(r.account_sid, 16, 32)
  if r.confirmed_at ~= nil then add(64, struct.pack('>d', r.confirmed_at)) end
  if (r.lease_until or 0) ~= 0 then add(128, struct.pack('>d', r.lease_until)) end
  if (r.attempts or 0) ~= 0 then add(256, struct.pack('>i4', r.attempts)) end
  if r.error_code ~= nil then add(512, struct.pack('>i4', r.error_code)) end
  local message = r.error_message
  if message ~= nil and message ~= '' then add(1024, struct.pack('>Hc0', #message, message)) end
  if r.country ~= nil then add(2048, struct.pack('>Bc0', #r.country, r.country)) end
  sid(r.sender, 4096, 8192)
  return struct.pack('>BHdd', 1, flags, r.expires_at, r.created_at or 0) .. table.concat(parts)
end

-- A hash written by twilio-feedback 0.1: every field by name, numbers as decimal text.
local function from_hash(flat)
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return {state = h.state or 'pending', expires_at = tonumber(h.expires_at),
          created_at = tonumber(h.created_at) or 0,
          message_sid = h.message_sid and sid_of(h.message_sid),
          account_sid = h.account_sid and sid_of(h.account_sid),
          confirmed_at = tonumber(h.confirmed_at),
          lease_until = tonumber(h.lease_until) or 0, attempts = tonumber(h.attempts) or 0,
          error_code = tonumber(h.error_code), error_message = h.error_message}
end

-- The record's packed value, or nil when there is none (another type is no record).
local function load_value(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'string' then return v end
  if type(v) == 'table' and v.err and redis.call('TYPE', key).ok == 'hash' then
    return encode(from_hash(redis.call('HGETALL', key)))
  end
  return nil
end

local function load(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'string' then return decode(v) end
  if type(v) == 'table' and v.err and redis.call('TYPE', key).ok == 'hash' then
    return from_hash(redis.call('HGETALL', key))
  end
  return nil
end

-- Write the record packed (a hash becomes a string) with its expiry; return the value.
local function save(key, r)
  local v = encode(r)
  local at = math.floor(r.expires_at * 1000)
  if at > 0 then
    redis.call('SET', key, v, 'PXAT', at)
  else
    redis.call('DEL', key)  -- expired long ago (SET refuses a time <= 0)
  end
  return v
end

-- The insights (InsightsStore): per UTC day of the send, one hash of counts, each field
-- '<index>:<country>:<sender>' with index in COUNTS then TTC_BUCKETS (insights.py).
-- TTC_BUCKETS is defined above this file by redis.py, from insights.TTC_BUCKETS.
local SENT, CONFIRMED, REPORTED, FAILED, TTC = 0, 1, 2, 3, 4

-- insights.day_number: Python's float floor division, to the same day at every bound.
local function day_number(t)
  local mod = math.fmod(t, 86400)
  local div = (t - mod) / 86400
  if mod < 0 then div = div - 1 end
  local day = math.floor(div)
  if div - day > 0.5 then day = day + 1 end
  return day
end

local function ttc_bucket(seconds)
  for i, bound in ipairs(TTC_BUCKETS) do
    if seconds <= bound then return i - 1 end
  end
  return #TTC_BUCKETS - 1
end

-- Count a change of record r in the insights under key prefix `prefix` (nothing for a
-- record without a country: insights off).
local function tally(prefix, r, index, by)
  if r.country == nil then return end
  local sender = 'unknown'
  if r.sender then sender = sid_text(r.sender) end
  local field = index .. ':' .. r.country .. ':' .. sender
  redis.call('HINCRBY', prefix .. day_number(r.created_at), field, by or 1)
end
