-- forget_channels.lua: a Redis script of django_pulse.presence (loaded by django_pulse._lua.load_lua).
-- Per-app index of channels that may have members (``pchans``, a sorted set: channel -> a version bumped by
-- every enter). Removes the channels of ARGV (channel, version pairs) whose version is still the one read
-- when their member hash was seen empty: an enter since then bumped it, so it stays.
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
