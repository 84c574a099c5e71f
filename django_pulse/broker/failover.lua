-- failover.lua: a helper prepended to publish.lua and read.lua (django_pulse._lua.load_lua).
-- fork_if_new_master(counter, candidate, last): the counter hash remembers the replication id of the master that
-- last wrote it (field r). Served by another master (a promoted replica), the channel starts the new epoch
-- ``candidate``, because the old master may have handed out serials this one never received (asynchronous
-- replication) and a resume across that gap must not pass for exact. The counter keeps the epoch it replaced
-- (pe) and ``last``, the last serial this master holds in it (pf, the fork point): a client whose last serial
-- is at or below the fork saw nothing this master lacks, so its resume stays exact (server.recovery). The
-- history stays: it is what this master received, all of it delivered and true.
local function fork_if_new_master(counter, candidate, last)
  local node = string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)')
  local seen = redis.call('HGET', counter, 'r')
  if seen == node then
    return
  end
  redis.call('HSET', counter, 'r', node)
  if seen and last > 0 then
    local previous = redis.call('HGET', counter, 'e')
    redis.call('HSET', counter, 'e', candidate, 'pe', previous, 'pf', last)
  end
end
