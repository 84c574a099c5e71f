-- client_release.lua: a Redis script of django_pulse.cluster (loaded by django_pulse._lua.load_lua).
-- KEYS[1]: the hash of one client id's open connections. ARGV: slot, owner.
-- Removes the slot if ``owner`` still holds it: the ending connection's own process, or the sweep of a dead
-- process (several sweepers remove each slot once; a slot re-owned by a live process stays). -> 1 | 0
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
