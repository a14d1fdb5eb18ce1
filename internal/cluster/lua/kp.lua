-- kp.lua: one device's MLS KeyPackages, kept in Redis so that every node offers each
-- one once (an MLS KeyPackage must be used once) and a device that uploaded on one node
-- can be added by any other. Both keys are the device's, under its user's hash tag
-- (one slot). Times are the calling node's (Unix seconds), so a test can move them.
-- KEYS[1]  the stored KeyPackages: ZSET "<ref hex> <sealed entry>" scored by NotAfter
-- KEYS[2]  the used refs: ZSET "<ref hex>" scored by NotAfter, so an entry used once is
--          refused if uploaded again (or copied back in) while it could still be added
-- ARGV[1]  'upload' or 'take'
-- ARGV[2]  now; stored entries whose NotAfter is before it are dropped first
-- ARGV[3]  grace (s): used refs are dropped only that long past their NotAfter (clocks
--          of nodes differ), and each key expires that long after its last NotAfter
--          (an abandoned device's keys vanish by themselves)
-- upload: ARGV[4] the cap, ARGV[5..] three values per KeyPackage: ref hex, NotAfter,
--   sealed entry. The whole batch is refused, nothing written, with 'KNOWN <i>' (i from
--   0) when entry i is stored, was used or repeats an earlier one of the batch, or with
--   'FULL' when the stored ones and the batch exceed the cap. Else returns the count.
-- take: ARGV[4] the most entries to skip. Pops the entry that expires first and records
--   its ref as used; an entry without a ref, or whose ref is used already (a copy put
--   back by hand), is dropped and skipped. Returns {member, NotAfter, left, skipped};
--   member is '' when the device has none. The node checks the seal of what it gets.
local op, now, grace = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if now == nil or grace == nil or grace < 0 then
  return redis.error_reply('ERR kp: bad arguments')
end
local stored, used = KEYS[1], KEYS[2]
redis.call('ZREMRANGEBYSCORE', stored, '-inf', '(' .. now)
redis.call('ZREMRANGEBYSCORE', used, '-inf', '(' .. (now - grace))

-- expireAfterLast makes key expire grace seconds after its highest NotAfter.
local function expireAfterLast(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #last == 2 then
    redis.call('EXPIREAT', key, math.floor(tonumber(last[2])) + grace + 1)
  end
end

if op == 'upload' then
  local cap = tonumber(ARGV[4])
  if cap == nil or (#ARGV - 4) % 3 ~= 0 then
    return redis.error_reply('ERR kp: bad upload')
  end
  local have = {}
  for _, m in ipairs(redis.call('ZRANGE', stored, 0, -1)) do
    local ref = string.match(m, '^(%x+) ')
    if ref then
      have[ref] = true
    end
  end
  local n = 0
  for i = 5, #ARGV, 3 do
    local ref, notAfter = ARGV[i], tonumber(ARGV[i + 1])
    if string.match(ref, '^%x+$') == nil or notAfter == nil then
      return redis.error_reply('ERR kp: bad KeyPackage')
    end
    if have[ref] or redis.call('ZSCORE', used, ref) then
      return redis.error_reply('KNOWN ' .. n)
    end
    have[ref] = true
    n = n + 1
  end
  if redis.call('ZCARD', stored) + n > cap then
    return redis.error_reply('FULL')
  end
  for i = 5, #ARGV, 3 do
    redis.call('ZADD', stored, ARGV[i + 1], ARGV[i] .. ' ' .. ARGV[i + 2])
  end
  expireAfterLast(stored)
  return redis.call('ZCARD', stored)
elseif op == 'take' then
  local skipMax = tonumber(ARGV[4])
  if skipMax == nil then
    return redis.error_reply('ERR kp: bad take')
  end
  local skipped = 0
  while skipped <= skipMax do
    local first = redis.call('ZRANGE', stored, 0, 0, 'WITHSCORES')
    if #first == 0 then
      break
    end
    local m, score = first[1], first[2]
    redis.call('ZREM', stored, m)
    local ref = string.match(m, '^(%x+) ')
    if ref and not redis.call('ZSCORE', used, ref) then
      redis.call('ZADD', used, score, ref)
      expireAfterLast(used)
      return {m, score, redis.call('ZCARD', stored), skipped}
    end
    skipped = skipped + 1
  end
  return {'', '0', redis.call('ZCARD', stored), skipped}
end
return redis.error_reply('ERR kp: unknown op')
