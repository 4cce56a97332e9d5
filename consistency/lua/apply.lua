-- Deltas from one peer's stream, applied with the same merge rules; replaying
-- any of them changes nothing.
-- KEYS: stream, applied
-- ARGV: self, now_ms, origin, last stream id, then three per entry:
--       'd', observation (as in ingest.lua), counter slot total   or
--       'c', msgpack [world, entity, source], compensation total
local self, now, origin, last_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local stream, applied = KEYS[1], KEYS[2]
note_minute(now)
for a = 5, #ARGV, 3 do
  local kind, t, count = ARGV[a], cmsgpack.unpack(ARGV[a + 1]), ARGV[a + 2]
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
return 1
