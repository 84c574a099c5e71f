-- publish.lua: a Redis script of django_pulse.broker (loaded by django_pulse._lua.load_lua after failover.lua
-- and frame.lua, which holds the publish itself).
-- KEYS: counter hash, bus channel, history stream, and for an idempotent publish the record of its message id.
-- ARGV: frame head, epoch candidate, now (ms), HISTORY_SIZE, HISTORY_TTL (ms), channel name, publish command
-- ("PUBLISH"; "SPUBLISH" on Redis Cluster, where KEYS[2] is a shard channel in the keys' slot), failover check
-- ("1" with replicas that can be promoted, else ""), CHANNEL_TTL (ms): the counter expires that long after the
-- channel's last publish or read (read.lua), and a counter created again afterwards has a new epoch;
-- HISTORY_MIN_RETENTION (ms): entries younger than this are kept even past HISTORY_SIZE (0: trim by count only),
-- and the most entries kept however young (what one resume may replay); and with KEYS[4] the idempotency
-- window (ms).
-- Returns the serial; with KEYS[4], {serial, 1} when the id was published within the window (that publish's
-- serial; nothing is published now) and {serial, 0} otherwise. The record is written by the script that
-- publishes, so a publish whose reply was lost (a timeout after the script ran) is never published twice by
-- the publisher's retry, and a publish that never ran leaves no record to block the retry. With the check, a
-- channel served by another master than the one that last wrote it forks a new epoch (failover.lua).
local n, repeated = publish_frame(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[12])
if KEYS[4] then
  return {n, repeated}
end
return n
