-- publish.lua: a Redis script of django_pulse.broker (loaded by django_pulse._lua.load_lua).
-- KEYS: counter hash, bus channel, history stream.
-- ARGV: frame head, epoch candidate, now (ms), HISTORY_SIZE, HISTORY_TTL (ms), channel name.
-- A channel name needs no JSON escaping (protocol.CHANNEL_RE), so the notice is built here.
local n = redis.call('HINCRBY', KEYS[1], 's', 1)
if n == 1 then
  redis.call('PERSIST', KEYS[1])
  if redis.call('HSETNX', KEYS[1], 'e', ARGV[2]) == 1 then
    redis.call('DEL', KEYS[3])
    redis.call('PUBLISH', KEYS[2],
      '{"action":"discontinuity","channel":"' .. ARGV[6] .. '","reason":"history_lost"}')
  end
end
local frame = ARGV[1] .. n .. '}'
local size = tonumber(ARGV[4])
if size > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', size, n .. '-0', 'f', frame, 't', ARGV[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
end
redis.call('PUBLISH', KEYS[2], frame)
return n
