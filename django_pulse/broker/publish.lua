-- publish.lua: a Redis script of django_pulse.broker (loaded by django_pulse._lua.load_lua).
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
  -- No notice is published: every process lost its subscriber connection to the old master and has told its
  -- subscribers (broker_unavailable) before anything of this master reaches them.
  fork_if_new_master(KEYS[1], ARGV[2], n - 1)
end
local frame = ARGV[1] .. n .. '}'
local size = tonumber(ARGV[4])
if size > 0 then
  local keep = tonumber(ARGV[10])
  if keep > 0 then
    -- Trimmed by count only where entries are older than the retention window: a failover's backlog stays
    -- resumable however fast the channel is. At most 8 entries go per publish (each adds one), so the stream
    -- comes back to HISTORY_SIZE once the burst is older than the window.
    redis.call('XADD', KEYS[3], 'MAXLEN', math.max(size, tonumber(ARGV[11])), n .. '-0', 'f', frame, 't', ARGV[3])
    local excess = redis.call('XLEN', KEYS[3]) - size
    if excess > 0 then
      local horizon = tonumber(ARGV[3]) - keep
      local cut = nil
      for _, entry in ipairs(redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', math.min(excess, 8))) do
        if tonumber(entry[2][4]) >= horizon then break end
        cut = tonumber(string.match(entry[1], '^(%d+)'))
      end
      if cut then redis.call('XTRIM', KEYS[3], 'MINID', (cut + 1) .. '-0') end
    end
  else
    redis.call('XADD', KEYS[3], 'MAXLEN', size, n .. '-0', 'f', frame, 't', ARGV[3])
  end
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
end
redis.call(ARGV[7], KEYS[2], frame)
if KEYS[4] then
  redis.call('SET', KEYS[4], n, 'PX', ARGV[12])
  return {n, 0}
end
return n
