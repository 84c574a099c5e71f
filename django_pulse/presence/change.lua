-- change.lua: a Redis script of django_pulse.presence (loaded by django_pulse._lua.load_lua).
-- common.lua's helpers (member_json, frame, json_string) are prepended when it is loaded.
-- KEYS: pres, pserial, pchans, procmembers(owner), procs
-- ARGV: owner, connectionId, connectionId-JSON, clientId-JSON, data-JSON, timestamp, max members, channel,
--       bus channel, procmembers entry, mode ("enter" | "update")
-- -> {event, serial, frame, count, stored value} | {"full"} | {"absent"}
local current = redis.call('HGET', KEYS[1], ARGV[2])
local event, ts, client = 'enter', ARGV[6], ARGV[4]
if current then
  local _m, _o
  _m, _o, ts = member_json(ARGV[3], current)
  event = 'update'
  if ARGV[11] == 'update' then
    local p2 = string.find(current, '\t', string.find(current, '\t', 1, true) + 1, true)
    local p3 = string.find(current, '\t', p2 + 1, true)
    client = string.sub(current, p2 + 1, p3 - 1)
  end
elseif ARGV[11] == 'update' then
  return {'absent'}
elseif redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[7]) then
  return {'full'}
else
  redis.call('HINCRBY', KEYS[3], ARGV[8], 1)
end
local value = ARGV[1] .. '\t' .. ts .. '\t' .. client .. '\t' .. ARGV[5]
redis.call('HSET', KEYS[1], ARGV[2], value)
redis.call('SADD', KEYS[4], ARGV[10])
redis.call('SADD', KEYS[5], ARGV[1])
local serial = redis.call('INCR', KEYS[2])
local member = member_json(ARGV[3], value)
local f = frame(ARGV[8], event, member, serial)
redis.call('PUBLISH', ARGV[9], f)
return {event, serial, f, redis.call('HLEN', KEYS[1]), value}
