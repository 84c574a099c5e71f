-- frame.lua: the body of a publish, prepended to publish.lua and publish_batch.lua (django_pulse._lua.load_lua).
-- publish_frame(counter, bus, hist, idem, head, window): publishes one frame of a channel and returns its serial
-- and 1 when ``idem`` (the record of the message id, or nil) says the id was published within the window (that
-- publish's serial; nothing is published now), else 0. ARGV[2..11] are the channel's common arguments
-- (publish.lua names them). A channel name needs no JSON escaping (protocol.CHANNEL_RE), so the notice is built
-- here.
local function publish_frame(counter, bus, hist, idem, head, window)
  if idem then
    local first = redis.call('GET', idem)
    if first then
      return tonumber(first), 1
    end
  end
  local n = redis.call('HINCRBY', counter, 's', 1)
  redis.call('PEXPIRE', counter, ARGV[9])
  if n == 1 then
    if redis.call('HSETNX', counter, 'e', ARGV[2]) == 1 then
      redis.call('DEL', hist)
      redis.call(ARGV[7], bus,
        '{"action":"discontinuity","channel":"' .. ARGV[6] .. '","reason":"history_lost"}')
    end
  end
  if ARGV[8] ~= '' then
    -- No notice is published: every process lost its subscriber connection to the old master and has told its
    -- subscribers (broker_unavailable) before anything of this master reaches them.
    fork_if_new_master(counter, ARGV[2], n - 1)
  end
  local frame = head .. n .. '}'
  local size = tonumber(ARGV[4])
  if size > 0 then
    local keep = tonumber(ARGV[10])
    if keep > 0 then
      -- Trimmed by count only where entries are older than the retention window: a failover's backlog stays
      -- resumable however fast the channel is. At most 8 entries go per publish (each adds one), so the stream
      -- comes back to HISTORY_SIZE once the burst is older than the window.
      redis.call('XADD', hist, 'MAXLEN', math.max(size, tonumber(ARGV[11])), n .. '-0', 'f', frame, 't', ARGV[3])
      local excess = redis.call('XLEN', hist) - size
      if excess > 0 then
        local horizon = tonumber(ARGV[3]) - keep
        local cut = nil
        for _, entry in ipairs(redis.call('XRANGE', hist, '-', '+', 'COUNT', math.min(excess, 8))) do
          if tonumber(entry[2][4]) >= horizon then break end
          cut = tonumber(string.match(entry[1], '^(%d+)'))
        end
        if cut then redis.call('XTRIM', hist, 'MINID', (cut + 1) .. '-0') end
      end
    else
      redis.call('XADD', hist, 'MAXLEN', size, n .. '-0', 'f', frame, 't', ARGV[3])
    end
    redis.call('PEXPIRE', hist, ARGV[5])
  end
  redis.call(ARGV[7], bus, frame)
  if idem then
    redis.call('SET', idem, n, 'PX', window)
  end
  return n, 0
end
