-- leave.lua: a Redis script of django_pulse.presence (loaded by django_pulse._lua.load_lua).
-- common.lua's helpers (member_json, frame, json_string) are prepended when it is loaded.
-- KEYS: pres, pserial, pchans
-- ARGV: connectionId, connectionId-JSON, channel, bus channel, procmembers entry, key prefix, calling process id
-- -> {"leave", serial, frame, count, stored value} | {"absent"}
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return {'absent'} end
local member, owner = member_json(ARGV[2], current)
-- Only the owning process leaves a member: a late grace-period leave from a process the connection has
-- just moved away from (recovery adopted the member) must not remove it.
if owner ~= ARGV[7] then return {'absent'} end
redis.call('HDEL', KEYS[1], ARGV[1])
local count = redis.call('HLEN', KEYS[1])
if count == 0 then redis.call('HDEL', KEYS[3], ARGV[3]) else redis.call('HINCRBY', KEYS[3], ARGV[3], -1) end
redis.call('SREM', ARGV[6] .. ':procmembers:' .. owner, ARGV[5])
local serial = redis.call('INCR', KEYS[2])
local f = frame(ARGV[3], 'leave', member, serial)
redis.call('PUBLISH', ARGV[4], f)
return {'leave', serial, f, count, current}
