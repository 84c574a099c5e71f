-- read.lua: a Redis script of django_pulse.broker (loaded by django_pulse._lua.load_lua).
-- KEYS: counter hash, history stream. ARGV: epoch candidate, after, before ('' for none), limit, CHANNEL_TTL (ms),
-- failover check (as publish.lua's; failover.lua is prepended).
-- A read is activity: the counter expires CHANNEL_TTL after the channel's last publish (publish.lua) or read.
-- A counter created here (serial 0) starts a new epoch and drops stale history.
-- Returns {serial, epoch, entries, previous epoch, fork serial} (the last two false unless a failover set them:
-- publish.lua).
if redis.call('HSETNX', KEYS[1], 's', 0) == 1 then
  redis.call('HSET', KEYS[1], 'e', ARGV[1])
  redis.call('DEL', KEYS[2])
elseif redis.call('HSETNX', KEYS[1], 'e', ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2])
end
if ARGV[6] and ARGV[6] ~= '' then
  -- A subscriber on a promoted replica starts in the epoch that master forks, never in the one it replaces.
  fork_if_new_master(KEYS[1], ARGV[1], tonumber(redis.call('HGET', KEYS[1], 's')))
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local state = redis.call('HMGET', KEYS[1], 's', 'e', 'pe', 'pf')
local entries = {}
local limit = tonumber(ARGV[4])
if limit > 0 then
  local max = '+'
  if ARGV[3] ~= '' then max = '(' .. ARGV[3] .. '-0' end
  entries = redis.call('XREVRANGE', KEYS[2], max, '(' .. ARGV[2] .. '-0', 'COUNT', limit)
end
return {state[1], state[2], entries, state[3], state[4]}
