-- Forget event ids older than the dedup window, and the oldest beyond the cap.
-- KEYS: dedup. ARGV: oldest score to keep (ms), max entries
local dedup = KEYS[1]
local function forget(members)
  for _, m in ipairs(members) do
    local skey, ev = string.match(m, '^(.-)\n(.*)$')
    redis.call('HDEL', skey, ev)
    redis.call('ZREM', dedup, m)
  end
  return #members
end
local n = forget(redis.call('ZRANGEBYSCORE', dedup, '-inf', '(' .. ARGV[1], 'LIMIT', 0, 10000))
local over = redis.call('ZCARD', dedup) - tonumber(ARGV[2])
if over > 0 then n = n + forget(redis.call('ZRANGE', dedup, 0, math.min(over, 10000) - 1)) end
return n
