-- touch.lua: a Redis script of django_pulse.broker (loaded by django_pulse._lua.load_lua).
-- KEYS[1]: a channel's serial counter or presence serial. ARGV[1]: expiry (ms, CHANNEL_TTL). Pushes back the
-- expiry of a key that has one and leaves a key without one (a presence serial while members are present) or
-- a missing one alone. The liveness loop of a process runs it for the channels it has subscribers of, so a
-- channel somebody listens to is never idle (cluster.liveness.RedisLiveness.touch_held_channels).
if redis.call('PTTL', KEYS[1]) > 0 then return redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 0
