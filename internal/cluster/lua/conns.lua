-- conns.lua: take one of a user's cluster-wide connection slots, or refuse.
-- The key is a sorted set of slot -> expiry (ms, Redis's clock). A node renews the
-- slots it holds (renew.lua) and removes one on close; a killed node stops renewing,
-- so its slots expire by themselves.
-- KEYS[1]  the user's conns key
-- ARGV[1]  slot name (node, boot and connection)
-- ARGV[2]  cap (slots the user may hold)
-- ARGV[3]  lease in ms
-- Returns {1, 0} when taken, {0, ms until the earliest slot expires} when full.
local cap = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
if cap == nil or lease == nil or cap < 1 or lease < 1 then
  return redis.error_reply('ERR conns: bad arguments')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false and redis.call('ZCARD', KEYS[1]) >= cap then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(first[2]) - now}
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease)
return {1, 0}
