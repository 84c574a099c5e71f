-- adopt.lua: a Redis script of django_pulse.presence (loaded by django_pulse._lua.load_lua).
-- Moves member ARGV[1] from process ARGV[2] to process ARGV[3] (a recovered connection): the owner field of
-- its stored value changes; no serial, no event. KEYS: pres -> the new stored value | false
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return false end
local tab = string.find(current, '\t', 1, true)
if string.sub(current, 1, tab - 1) ~= ARGV[2] then return false end
local value = ARGV[3] .. string.sub(current, tab)
redis.call('HSET', KEYS[1], ARGV[1], value)
return value
