-- gcra.lua: one message from a user's cluster-wide budget, or how long to wait.
-- Generic cell rate algorithm: the key holds the theoretical arrival time (TAT) in
-- microseconds on Redis's own clock, so the nodes' clocks never matter.
-- KEYS[1]  the user's rate key
-- ARGV[1]  emission interval in microseconds (1e6 / rate)
-- ARGV[2]  burst (messages that may come at once)
-- Returns {1, 0} when allowed, {0, wait_us} when refused (nothing is spent then).
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
if interval == nil or burst == nil or interval <= 0 or burst < 1 then
  return redis.error_reply('ERR gcra: bad arguments')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local newTat = tat + interval
-- The earliest time the next message may come: burst intervals before the new TAT.
local allowAt = newTat - burst * interval
if now < allowAt then
  return {0, allowAt - now}
end
-- The key lives as long as it remembers anything: until the TAT has passed.
local ttlMs = math.ceil((newTat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%d', newTat), 'PX', ttlMs)
return {1, 0}
