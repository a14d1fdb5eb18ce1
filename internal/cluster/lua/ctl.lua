-- ctl.lua: append one sealed entry to the global control log, write the state it
-- changes, and wake every node, in one atomic step: no node can see the state without
-- the entry or the entry without the state.
-- KEYS[1]   the control stream; its PUB/SUB channel has the same name
-- KEYS[2..] the state keys the ops name by index
-- ARGV[1]   the sealed entry (also the value the ops store, so stored state is sealed)
-- ARGV[2]   MAXLEN of the stream (approximate trimming)
-- ARGV[3]   cap of a ZSET an op adds to, after sweeping expired members, or of a HASH
--           hsetcap adds a field to
-- ARGV[4..] ops, three values each: name, key index, argument
--   hset k field   HSET KEYS[k] field <entry>
--   hdel k field   HDEL KEYS[k] field
--   set  k -       SET KEYS[k] <entry>
--   zadd k expiry  sweep members whose score (ms) has passed, refuse when still at the
--                  cap, else ZADD KEYS[k] expiry <entry>
--   rev  k "<n> <field>"  refuse unless HGET KEYS[k] field is n (missing: 0), else
--                  HSET it to n+1: a record changed from an old revision loses
--   hsetcap k field  refuse when field is new and the hash is at the cap, else HSET
--                  (the cluster-wide -max-rooms: HLEN checked and the room listed in
--                  one step, so two nodes cannot both take the last place)
-- Returns the entry's stream id, the error 'FULL' (nothing written) when a zadd or an
-- hsetcap found its set at the cap, or 'STALE' (nothing written) when a rev did not match.
local entry = ARGV[1]
local cap = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ops = {}
for i = 4, #ARGV, 3 do
  local name, k, arg = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  if k == nil or k < 2 or KEYS[k] == nil or arg == nil then
    return redis.error_reply('ERR ctl: bad op')
  end
  if name == 'zadd' then
    if cap == nil or tonumber(arg) == nil then
      return redis.error_reply('ERR ctl: bad zadd')
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
    if redis.call('ZCARD', KEYS[k]) >= cap then
      return redis.error_reply('FULL')
    end
  elseif name == 'rev' then
    local n, field = string.match(arg, '^(%d+) (.+)$')
    if n == nil then
      return redis.error_reply('ERR ctl: bad rev')
    end
    if tonumber(redis.call('HGET', KEYS[k], field) or '0') ~= tonumber(n) then
      return redis.error_reply('STALE')
    end
  elseif name == 'hsetcap' then
    if cap == nil then
      return redis.error_reply('ERR ctl: bad hsetcap')
    end
    if redis.call('HEXISTS', KEYS[k], arg) == 0 and redis.call('HLEN', KEYS[k]) >= cap then
      return redis.error_reply('FULL')
    end
  elseif name ~= 'hset' and name ~= 'hdel' and name ~= 'set' then
    return redis.error_reply('ERR ctl: unknown op')
  end
  ops[#ops + 1] = {name, KEYS[k], arg}
end
for _, op in ipairs(ops) do
  if op[1] == 'hset' or op[1] == 'hsetcap' then
    redis.call('HSET', op[2], op[3], entry)
  elseif op[1] == 'hdel' then
    redis.call('HDEL', op[2], op[3])
  elseif op[1] == 'set' then
    redis.call('SET', op[2], entry)
  elseif op[1] == 'rev' then
    local n, field = string.match(op[3], '^(%d+) (.+)$')
    redis.call('HSET', op[2], field, tonumber(n) + 1)
  else
    redis.call('ZADD', op[2], op[3], entry)
  end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', entry)
-- The channel only wakes the nodes: they read the entry from the stream, so a lost
-- publication costs latency (until the next position check), never the entry.
redis.call('PUBLISH', KEYS[1], id)
return id
