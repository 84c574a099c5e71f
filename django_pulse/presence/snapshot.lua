-- snapshot.lua: a Redis script of django_pulse.presence (loaded by django_pulse._lua.load_lua).
-- KEYS: pres, pserial
-- -> {serial, values...}
local serial = tonumber(redis.call('GET', KEYS[2]) or '0')
local out = redis.call('HGETALL', KEYS[1])
table.insert(out, 1, serial)
return out
