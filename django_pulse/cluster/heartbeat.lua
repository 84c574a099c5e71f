-- heartbeat.lua: a Redis script of django_pulse.cluster (loaded by django_pulse._lua.load_lua).
-- KEYS: proc key, procs set, proctopics hash. ARGV: process id, value, ttl ms, topic1, count1, ...
-- -> 1 if the process key still existed (0: it had expired, so this process may have been swept)
local existed = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return existed
