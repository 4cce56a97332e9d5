-- Observations posted to this replica, atomically: refuse a seen event id,
-- merge the fields, count the event for its source, append the delta to the
-- replica's stream.
-- KEYS: stream, dedup
-- ARGV: origin, now_ms, then one msgpack array per observation:
--       [world, entity, event_id, source, fields] where fields is itself msgpack,
--       [[name, order_key, register], ...], kept as bytes for the stream entry.
local origin, now = ARGV[1], ARGV[2]
local stream, dedup = KEYS[1], KEYS[2]
local statuses, last_id = {}, ''
for a = 3, #ARGV do
  local ob = cmsgpack.unpack(ARGV[a])
  local world, entity, ev, source, packed = ob[1], ob[2], ob[3], ob[4], ob[5]
  local ekey, skey = entity_keys(world, entity)
  if redis.call('HSETNX', skey, ev, origin .. '|' .. source) == 0 then
    statuses[#statuses + 1] = 0
  else
    redis.call('ZADD', dedup, now, skey .. '\n' .. ev)
    index_entity(ekey, world, entity)
    merge_registers(ekey, cmsgpack.unpack(packed))
    local p = redis.call('HINCRBY', ekey, 'p:' .. source .. '@' .. origin, 1)
    last_id = redis.call('XADD', stream, '*', 'w', world, 'e', entity, 'ev', ev, 's', source, 'p', p,
                         'd', packed)
    statuses[#statuses + 1] = 1
  end
end
return {statuses, last_id}
