-- Observations posted to this replica, atomically: refuse a seen event id,
-- merge the fields, count the event for its source, append the delta to the
-- replica's stream.
-- KEYS: stream, dedup, then per observation: entity, seen, bucket, world index
-- ARGV: origin, now_ms, then per observation: world, entity, event_id, source,
--       nfields, then nfields x (name, order_key, register)
local origin, now = ARGV[1], ARGV[2]
local stream, dedup = KEYS[1], KEYS[2]
local statuses, last_id = {}, ''
local a, k = 3, 3
while a <= #ARGV do
  local world, entity, ev, source = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local nfields = tonumber(ARGV[a + 4])
  local ekey, skey, bkey, wkey = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  a, k = a + 5, k + 4
  if redis.call('HEXISTS', skey, ev) == 1 then
    statuses[#statuses + 1] = 0
    a = a + 3 * nfields
  else
    redis.call('HSET', skey, ev, origin .. '|' .. source)
    redis.call('ZADD', dedup, now, skey .. '\n' .. ev)
    local entry = {'w', world, 'e', entity, 'ev', ev, 'o', origin, 's', source}
    for _ = 1, nfields do
      local name, order_key, reg = ARGV[a], ARGV[a + 1], ARGV[a + 2]
      a = a + 3
      merge_register(ekey, name, order_key, reg)
      entry[#entry + 1] = 't:' .. name
      entry[#entry + 1] = order_key
      entry[#entry + 1] = 'f:' .. name
      entry[#entry + 1] = reg
    end
    local p = redis.call('HINCRBY', ekey, 'p:' .. source .. '@' .. origin, 1)
    entry[#entry + 1] = 'p'
    entry[#entry + 1] = p
    index_entity(ekey, bkey, wkey, world, entity)
    last_id = redis.call('XADD', stream, '*', unpack(entry))
    statuses[#statuses + 1] = 1
  end
end
return {statuses, last_id}
