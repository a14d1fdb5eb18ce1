-- renew.lua: extend the leases of slots a node still holds for one user.
-- XX: a slot that expired meanwhile (the node stalled for a whole lease) is not
-- brought back; the cap may already have been given to someone else.
-- KEYS[1]  the user's conns key
-- ARGV[1]  lease in ms, ARGV[2..] slot names
-- Returns how many slots were renewed.
local lease = tonumber(ARGV[1])
if lease == nil or lease < 1 then
  return redis.error_reply('ERR renew: bad arguments')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + lease, ARGV[i])
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], lease)
end
return n
