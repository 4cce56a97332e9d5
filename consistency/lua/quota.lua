-- A rate quota as GCRA (the generic cell rate algorithm): one key per bucket holding its
-- theoretical arrival time, in microseconds of Redis's own clock, so every node of a region
-- counts against the same bucket whatever its clock says.
-- KEYS[1] bucket; ARGV: rate per second, burst (requests' worth), cost.
-- Returns 0 when charged, else the microseconds until the cost would fit.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = 1000000 / rate
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return math.ceil(allow_at - now)
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 0
