-- Read records, whichever format they were written in.
-- KEYS: record keys. Returns each one's packed value, or nil where there is no record.
local out = {}
for i = 1, #KEYS do out[i] = load_value(KEYS[i]) or false end
return out
