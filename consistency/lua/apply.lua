-- Deltas from one peer's streams, applied with the same merge rules; replaying
-- any of them changes nothing.
-- KEYS: per partition the call carries (one on a Redis Cluster): its stream, its applied hash
-- ARGV: self, now_ms, origin, then per partition in order: the last stream id of its entries,
--       their count, then three per entry:
--       'd', observation (as in ingest.lua), counter slot total   or
--       'c', msgpack [world, entity, source], compensation total
local self, now, origin = ARGV[1], ARGV[2], ARGV[3]
local a = 4
for k = 1, #KEYS, 2 do
  enter(k)
  local stream, applied, last_id = KEYS[k], KEYS[k + 1], ARGV[a]
  local last = a + 1 + 3 * tonumber(ARGV[a + 1])
  for i = a + 2, last, 3 do
    local kind, t, count = ARGV[i], cmsgpack.unpack(ARGV[i + 1]), ARGV[i + 2]
    local world, entity = t[1], t[2]
    local ekey, skey = entity_keys(world, entity)
    index_entity(ekey, world, entity)
    if kind == 'd' then
      local ev, source = t[3], t[4]
      local winners, tomb = merge_registers(ekey, t, 5)
      note_change(world, entity, origin, winners, tomb)
      merge_slot(ekey, 'p:' .. source .. '@' .. origin, count)
      note_event(stream, ekey, skey, world, entity, ev, origin, source, self, now)
    else
      merge_slot(ekey, 'n:' .. t[3] .. '@' .. origin, count)
    end
  end
  save_clock()
  local cur = redis.call('HGET', applied, origin)
  if (not cur) or stream_id_lt(cur, last_id) then
    redis.call('HSET', applied, origin, last_id)
  end
  a = last + 1
end
return 1
