-- Observations posted to this replica, atomically: refuse a seen event id,
-- merge the fields, count the event for its source, append the delta to the
-- replica's stream and what changed to its changes log.
-- KEYS: stream
-- ARGV: origin, now_ms, then one msgpack array per observation:
--       [world, entity, event_id, source, field, order_key, register, field, ...]
--       which is also, unchanged, the stream entry's `d` (its `p` is the count).
local origin, now = ARGV[1], ARGV[2]
local stream = KEYS[1]
local statuses, last_id = {}, ''
note_minute(now)
for a = 3, #ARGV do
  local ob = cmsgpack.unpack(ARGV[a])
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
    last_id = redis.call('XADD', stream, '*', 'd', ARGV[a], 'p', p)
    statuses[#statuses + 1] = 1
  end
end
save_clock()
return {statuses, last_id}
