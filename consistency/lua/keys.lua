-- One plain read or write on each of the keys, for keys of many partitions in one call on one Redis
-- (ap_logs.PartitionLogs._across); on a Redis Cluster the call carries one key.
-- KEYS: the keys
-- ARGV: 'get'  |  'hget', field  |  'hset', field, one value per key
-- Returns one answer per key (a missing value as nil).
local op, out = ARGV[1], {}
for k = 1, #KEYS do
  if op == 'get' then
    out[k] = redis.call('GET', KEYS[k])
  elseif op == 'hget' then
    out[k] = redis.call('HGET', KEYS[k], ARGV[2])
  else
    out[k] = redis.call('HSET', KEYS[k], ARGV[2], ARGV[2 + k])
  end
end
return out
