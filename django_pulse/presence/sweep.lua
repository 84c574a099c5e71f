-- sweep.lua: a Redis script of django_pulse.presence (loaded by django_pulse._lua.load_lua).
-- common.lua's helpers (member_json, frame, json_string) are prepended when it is loaded.
-- Removes up to ARGV[3] members of the dead process ARGV[2], each with its leave event, and forgets the
-- process when none is left. SPOP inside one script makes every member's removal happen exactly once even
-- when several live processes sweep the same dead one at the same time.
-- ARGV: key prefix, dead process id, batch size, bus prefix (the broker channel of topic T is bus prefix .. T)
-- -> {remaining, kbId1, frame1, count1, kbId2, ...} | {-1} when the process is alive again
local P, pid = ARGV[1], ARGV[2]
if redis.call('EXISTS', P .. ':proc:' .. pid) == 1 then return {-1} end
local entries = redis.call('SPOP', P .. ':procmembers:' .. pid, tonumber(ARGV[3]))
local out = {0}
for _, entry in ipairs(entries) do
  local t1 = string.find(entry, '\t', 1, true)
  local t2 = string.find(entry, '\t', t1 + 1, true)
  local kb, channel, conn = string.sub(entry, 1, t1 - 1), string.sub(entry, t1 + 1, t2 - 1), string.sub(entry, t2 + 1)
  local pres = P .. ':pres:' .. kb .. ':' .. channel
  local current = redis.call('HGET', pres, conn)
  if current then
    local member, owner = member_json(json_string(conn), current)
    if owner == pid then
      redis.call('HDEL', pres, conn)
      local count = redis.call('HLEN', pres)
      local chans = P .. ':pchans:' .. kb
      if count == 0 then redis.call('HDEL', chans, channel) else redis.call('HINCRBY', chans, channel, -1) end
      local serial = redis.call('INCR', P .. ':pserial:' .. kb .. ':' .. channel)
      local f = frame(channel, 'leave', member, serial)
      redis.call('PUBLISH', ARGV[4] .. 'p:' .. kb .. ':' .. channel, f)
      table.insert(out, kb)
      table.insert(out, f)
      table.insert(out, count)
    end
  end
end
local remaining = redis.call('SCARD', P .. ':procmembers:' .. pid)
if remaining == 0 then
  redis.call('SREM', P .. ':procs', pid)
  redis.call('DEL', P .. ':proctopics:' .. pid)
end
out[1] = remaining
return out
