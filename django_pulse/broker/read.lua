-- read.lua: a Redis script of django_pulse.broker (loaded by django_pulse._lua.load_lua).
-- KEYS: counter hash, history stream. ARGV: epoch candidate, after, before ('' for none), limit, idle expiry (ms)
-- of a counter created here. A counter created by a read (serial 0) expires if nothing is ever published (the
-- first publish makes it permanent); it starts a new epoch and drops stale history.
if redis.call('HSETNX', KEYS[1], 's', 0) == 1 then
  redis.call('HSET', KEYS[1], 'e', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('DEL', KEYS[2])
elseif redis.call('HSETNX', KEYS[1], 'e', ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2])
end
local state = redis.call('HMGET', KEYS[1], 's', 'e')
local entries = {}
local limit = tonumber(ARGV[4])
if limit > 0 then
  local max = '+'
  if ARGV[3] ~= '' then max = '(' .. ARGV[3] .. '-0' end
  entries = redis.call('XREVRANGE', KEYS[2], max, '(' .. ARGV[2] .. '-0', 'COUNT', limit)
end
return {state[1], state[2], entries}
