-- leave.lua: a Redis script of django_pulse.presence (loaded by django_pulse._lua.load_lua).
-- common.lua's helpers (member_json, frame) are prepended when it is loaded.
-- Every presence script of a channel touches the keys and the pub/sub channel of ONE channel, all in its hash slot
-- (``broker.keys``): KEYS[1] the member hash, KEYS[2] the presence serial, KEYS[3] the pub/sub channel (a key
-- only so that Redis Cluster routes the script to the channel's shard and checks it shares the slot).
-- The per-process and per-app indexes (procmembers, procs, pchans) are written by separate commands, in an
-- order that keeps them safe to act on (``RedisPresence`` methods).
-- Removes member ARGV[1] if process ARGV[4] owns it: only the owning process leaves a member (a late
-- grace-period leave from a process the connection has just moved away from must not remove it), and a sweep
-- of a dead process removes each of its members exactly once however many processes sweep at the same time.
-- KEYS[4] counts the members of each client id, and of anonymous visitors under '*anon' (change.lua). The last member out starts the expiry of the
-- presence serial (ARGV[6] ms, CHANNEL_TTL; the member and count hashes are gone once empty).
-- ARGV: connectionId, connectionId-JSON, channel, owner, publish command, expiry (ms)
-- -> {"leave", serial, frame, count, stored value} | {"absent"}
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return {'absent'} end
local member, owner = member_json(ARGV[2], current)
if owner ~= ARGV[4] then return {'absent'} end
redis.call('HDEL', KEYS[1], ARGV[1])
local p2 = string.find(current, '\t', string.find(current, '\t', 1, true) + 1, true)
local p3 = string.find(current, '\t', p2 + 1, true)
local client = string.sub(current, p2 + 1, p3 - 1)
if redis.call('HINCRBY', KEYS[4], client, -1) <= 0 then redis.call('HDEL', KEYS[4], client) end
if is_anonymous(client) and redis.call('HINCRBY', KEYS[4], '*anon', -1) <= 0 then
  redis.call('HDEL', KEYS[4], '*anon')
end
local count = redis.call('HLEN', KEYS[1])
local serial = redis.call('INCR', KEYS[2])
if count == 0 then redis.call('PEXPIRE', KEYS[2], ARGV[6]) end
local f = frame(ARGV[3], 'leave', member, serial)
redis.call(ARGV[5], KEYS[3], f)
return {'leave', serial, f, count, current}
