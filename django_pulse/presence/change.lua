-- change.lua: a Redis script of django_pulse.presence (loaded by django_pulse._lua.load_lua).
-- common.lua's helpers (member_json, frame) are prepended when it is loaded.
-- Every presence script of a channel touches the keys and the pub/sub channel of ONE channel, all in its hash slot
-- (``broker.keys``): KEYS[1] the member hash, KEYS[2] the presence serial, KEYS[3] the pub/sub channel (a key
-- only so that Redis Cluster routes the script to the channel's shard and checks it shares the slot).
-- The per-process and per-app indexes (procmembers, procs, pchans) are written by separate commands, in an
-- order that keeps them safe to act on (``RedisPresence`` methods).
-- KEYS[4] counts the members of each client id (clientId-JSON -> count), for the per-client limit.
-- ARGV: owner, connectionId, connectionId-JSON, clientId-JSON, data-JSON, timestamp, max members, channel,
--       mode ("enter" | "update"), publish command ("PUBLISH" | "SPUBLISH", as the broker's), max members per
--       client id (0: none), max members of anonymous visitors
-- The per-client limit is checked before the channel's: one client id alone never makes a channel "full".
-- Anonymous visitors' members (is_anonymous) are counted apart, under the field '*anon' of KEYS[4] (a client
-- field is JSON, so it starts with '"'): they fill their own ARGV[12] slots, never the ARGV[7] of signed-in
-- clients, so identities that cost nothing cannot lock the channel for those that do.
-- While a member is present the channel's presence keys do not expire (leave.lua sets the serial's expiry).
-- -> {event, serial, frame, count, stored value} | {"full"} | {"anonymous_full"} | {"client"} | {"absent"}
local current = redis.call('HGET', KEYS[1], ARGV[2])
local event, ts, client = 'enter', ARGV[6], ARGV[4]
if current then
  local _m, _o
  _m, _o, ts = member_json(ARGV[3], current)
  event = 'update'
  if ARGV[9] == 'update' then
    local p2 = string.find(current, '\t', string.find(current, '\t', 1, true) + 1, true)
    local p3 = string.find(current, '\t', p2 + 1, true)
    client = string.sub(current, p2 + 1, p3 - 1)
  end
elseif ARGV[9] == 'update' then
  return {'absent'}
else
  local per_client = tonumber(ARGV[11])
  if per_client > 0 and tonumber(redis.call('HGET', KEYS[4], ARGV[4]) or '0') >= per_client then
    return {'client'}
  end
  local anonymous = is_anonymous(ARGV[4])
  local anonymous_count = tonumber(redis.call('HGET', KEYS[4], '*anon') or '0')
  if anonymous then
    if anonymous_count >= tonumber(ARGV[12]) then
      return {'anonymous_full'}
    end
  elseif redis.call('HLEN', KEYS[1]) - anonymous_count >= tonumber(ARGV[7]) then
    return {'full'}
  end
  redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
  if anonymous then redis.call('HINCRBY', KEYS[4], '*anon', 1) end
end
local value = ARGV[1] .. '\t' .. ts .. '\t' .. client .. '\t' .. ARGV[5]
redis.call('HSET', KEYS[1], ARGV[2], value)
local serial = redis.call('INCR', KEYS[2])
redis.call('PERSIST', KEYS[2])
local member = member_json(ARGV[3], value)
local f = frame(ARGV[8], event, member, serial)
redis.call(ARGV[10], KEYS[3], f)
return {event, serial, f, redis.call('HLEN', KEYS[1]), value}
