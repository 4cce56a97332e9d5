-- Forget event ids seen before the dedup window (whole minutes), and the
-- oldest minutes beyond the cap on remembered ids; at most 10000 ids a call.
-- KEYS: the partition's T:dedup:minutes. ARGV: oldest minute to keep, max ids (the partition's share)
local budget = 10000
local forgotten = 0
local function forget_minute(minute)
  local list = T .. ':dedup:' .. minute
  local members = redis.call('LPOP', list, budget - forgotten) or {}
  for _, m in ipairs(members) do
    local skey, ev = string.match(m, '^(.-)\n(.*)$')
    redis.call('HDEL', skey, ev)
  end
  forgotten = forgotten + #members
  if redis.call('LLEN', list) == 0 then redis.call('ZREM', KEYS[1], minute) end
end
for _, minute in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])) do
  if forgotten >= budget then return forgotten end
  forget_minute(minute)
end
local minutes = redis.call('ZRANGE', KEYS[1], 0, -1)
local total = 0
for _, minute in ipairs(minutes) do total = total + redis.call('LLEN', T .. ':dedup:' .. minute) end
local i = 1
while total > tonumber(ARGV[2]) and forgotten < budget and i <= #minutes do
  local before = forgotten
  forget_minute(minutes[i])
  total = total - (forgotten - before)
  i = i + 1
end
return forgotten
