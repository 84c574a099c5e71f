-- publish_batch.lua: several idempotent publishes of one channel in one script, in order (the outbox relay's
-- rows of a channel; loaded after failover.lua and frame.lua).
-- KEYS: counter hash, bus channel, history stream, then the record of each message's id.
-- ARGV: as publish.lua's (ARGV[1], the head, unused), the idempotency window (ms) at 12, then each message's
-- frame head from 13 on, in the order of KEYS[4..].
-- Returns {serial, repeated} of each message, flat. A failure stops the script where it is: the messages before
-- it are published and recorded (a retry does not deliver them twice), those after it are not, so the channel's
-- order holds whatever the retry finds.
local replies = {}
for i = 4, #KEYS do
  local n, repeated = publish_frame(KEYS[1], KEYS[2], KEYS[3], KEYS[i], ARGV[9 + i], ARGV[12])
  replies[#replies + 1] = n
  replies[#replies + 1] = repeated
end
return replies
