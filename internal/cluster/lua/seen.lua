-- seen.lua: one signed message's device counter, kept monotonic across every node.
-- The key is the user's (one hash slot per user); each field is a device id holding
-- the highest counter any node accepted. A counter at or below it is a replay.
-- KEYS[1]  the user's counters (HASH device -> counter)
-- ARGV[1]  the device id
-- ARGV[2]  the counter (1 to 2^53-1: exact in Lua's numbers)
-- Returns 1 when the counter is new (and kept), 0 when it is a replay (nothing kept).
local n = tonumber(ARGV[2])
if n == nil or n < 1 then
  return redis.error_reply('ERR seen: bad counter')
end
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if n <= cur then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
