-- publish.lua: a Redis script of django_pulse.broker (loaded by django_pulse._lua.load_lua).
-- KEYS: counter hash, bus channel, history stream, and for an idempotent publish the record of its message id.
-- ARGV: frame head, epoch candidate, now (ms), HISTORY_SIZE, HISTORY_TTL (ms), channel name, publish command
-- ("PUBLISH"; "SPUBLISH" on Redis Cluster, where KEYS[2] is a shard channel in the keys' slot), failover check
-- ("1" with replicas that can be promoted, else ""), CHANNEL_TTL (ms): the counter expires that long after the
-- channel's last publish or read (read.lua), and a counter created again afterwards has a new epoch; and with
-- KEYS[4] the idempotency window (ms).
-- Returns the serial; with KEYS[4], {serial, 1} when the id was published within the window (that publish's
-- serial; nothing is published now) and {serial, 0} otherwise. The record is written by the script that
-- publishes, so a publish whose reply was lost (a timeout after the script ran) is never published twice by
-- the publisher's retry, and a publish that never ran leaves no record to block the retry. With the check, the counter remembers the replication id of
-- the master that last wrote it (field ``r``): a publish on another master (a promoted replica) starts a new
-- epoch, because the old master may have handed out serials this one never received (asynchronous
-- replication), and a resume across that gap must not pass for exact.
-- A channel name needs no JSON escaping (protocol.CHANNEL_RE), so the notice is built here.
if KEYS[4] then
  local first = redis.call('GET', KEYS[4])
  if first then
    return {tonumber(first), 1}
  end
end
local n = redis.call('HINCRBY', KEYS[1], 's', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[9])
if n == 1 then
  if redis.call('HSETNX', KEYS[1], 'e', ARGV[2]) == 1 then
    redis.call('DEL', KEYS[3])
    redis.call(ARGV[7], KEYS[2],
      '{"action":"discontinuity","channel":"' .. ARGV[6] .. '","reason":"history_lost"}')
  end
end
if ARGV[8] ~= '' then
  local node = string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)')
  local seen = redis.call('HGET', KEYS[1], 'r')
  if seen ~= node then
    redis.call('HSET', KEYS[1], 'r', node)
    if seen and n > 1 then
      -- The history stays: it is what this master received, all of it delivered and true.
      redis.call('HSET', KEYS[1], 'e', ARGV[2])
      redis.call(ARGV[7], KEYS[2],
        '{"action":"discontinuity","channel":"' .. ARGV[6] .. '","reason":"history_lost"}')
    end
  end
end
local frame = ARGV[1] .. n .. '}'
local size = tonumber(ARGV[4])
if size > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', size, n .. '-0', 'f', frame, 't', ARGV[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
end
redis.call(ARGV[7], KEYS[2], frame)
if KEYS[4] then
  redis.call('SET', KEYS[4], n, 'PX', ARGV[10])
  return {n, 0}
end
return n
