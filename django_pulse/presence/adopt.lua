-- adopt.lua: a Redis script of django_pulse.presence (loaded by django_pulse._lua.load_lua).
-- Moves the members of connection ARGV[4] from process ARGV[2] to process ARGV[3] (a recovered connection):
-- the owner field of each stored value and the procmembers entries change; no serial, no event.
-- ARGV: key prefix, previous process id, new process id, connectionId -> {kbId1, channel1, value1, ...}
local P, old, new, conn = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local suffix = '\t' .. conn
local out = {}
for _, entry in ipairs(redis.call('SMEMBERS', P .. ':procmembers:' .. old)) do
  if string.sub(entry, -#suffix) == suffix then
    local t1 = string.find(entry, '\t', 1, true)
    local t2 = string.find(entry, '\t', t1 + 1, true)
    local kb, channel = string.sub(entry, 1, t1 - 1), string.sub(entry, t1 + 1, t2 - 1)
    local pres = P .. ':pres:' .. kb .. ':' .. channel
    local current = redis.call('HGET', pres, conn)
    redis.call('SREM', P .. ':procmembers:' .. old, entry)
    if current then
      local tab = string.find(current, '\t', 1, true)
      local value = new .. string.sub(current, tab)
      redis.call('HSET', pres, conn, value)
      redis.call('SADD', P .. ':procmembers:' .. new, entry)
      table.insert(out, kb)
      table.insert(out, channel)
      table.insert(out, value)
    end
  end
end
if #out > 0 then redis.call('SADD', P .. ':procs', new) end
return out
