-- Observations posted to this replica, atomically: refuse a seen event id,
-- merge the fields, count the event for its source, append the delta to the
-- partition's stream and what changed to its changes log.
-- KEYS: one stream per partition the call carries (one on a Redis Cluster)
-- ARGV: origin, now_ms, then for each key in order: the count of its observations, then one
--       msgpack array per observation: [world, entity, event_id, source, field, order_key,
--       register, field, ...], which is also, unchanged, the stream entry's `d` (its `p` is the count).
-- Returns, per key: {statuses, the stream id of its last append ('' if none)}
local origin, now = ARGV[1], ARGV[2]
local out, a = {}, 3
for k = 1, #KEYS do
  enter(k)
  local stream = KEYS[k]
  local statuses, last_id = {}, ''
  local last = a + tonumber(ARGV[a])
  for i = a + 1, last do
    local ob = cmsgpack.unpack(ARGV[i])
    local world, entity, ev, source = ob[1], ob[2], ob[3], ob[4]
    local ekey, skey = entity_keys(world, entity)
    if redis.call('HSETNX', skey, ev, origin .. '|' .. source) == 0 then
      statuses[#statuses + 1] = 0
    else
      remember(now, skey, ev)
      index_entity(ekey, world, entity)
      local winners, tomb = merge_registers(ekey, ob, 5)
      note_change(world, entity, origin, winners, tomb)
      local p = redis.call('HINCRBY', ekey, 'p:' .. source .. '@' .. origin, 1)
      last_id = redis.call('XADD', stream, '*', 'd', ARGV[i], 'p', p)
      statuses[#statuses + 1] = 1
    end
  end
  save_clock()
  out[k] = {statuses, last_id}
  a = last + 1
end
return out
