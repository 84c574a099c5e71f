-- client_acquire.lua: a Redis script of django_pulse.cluster (loaded by django_pulse._lua.load_lua).
-- KEYS[1]: the hash of one client id's open connections (slot -> owner process id; ``broker.keys.client_key``).
-- ARGV: slot, owner, limit (0: none). Records the slot unless the client holds ``limit`` slots already.
-- -> {1, count} admitted (a slot recorded before is re-owned, not counted twice) | {0, count} refused
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  local limit = tonumber(ARGV[3])
  local count = redis.call('HLEN', KEYS[1])
  if limit > 0 and count >= limit then return {0, count} end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {1, redis.call('HLEN', KEYS[1])}
