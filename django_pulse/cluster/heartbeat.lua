-- heartbeat.lua: a Redis script of django_pulse.cluster (loaded by django_pulse._lua.load_lua).
-- KEYS: proc key, proctopics hash (one slot: the process id is their hash tag). ARGV: value, ttl ms, topic1,
-- count1, ... -> 1 if the process key still existed (0: it had expired, so this process may have been swept).
-- The process is added to the procs set after the script (its key exists by then, so no sweeper sees it dead).
local existed = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return existed
