-- Deltas from one peer's stream, applied with the same merge rules; replaying
-- any of them changes nothing.
-- KEYS: stream, dedup, applied
-- ARGV: self, now_ms, origin, last stream id, then one msgpack array per entry:
--       [world, entity, event_id, source, p, n, fields] ('' where absent;
--       fields as in ingest.lua)
local self, now, origin, last_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local stream, dedup, applied = KEYS[1], KEYS[2], KEYS[3]
for a = 5, #ARGV do
  local en = cmsgpack.unpack(ARGV[a])
  local world, entity, ev, source, p, n, packed = en[1], en[2], en[3], en[4], en[5], en[6], en[7]
  local ekey, skey = entity_keys(world, entity)
  index_entity(ekey, world, entity)
  if packed ~= '' then merge_registers(ekey, cmsgpack.unpack(packed)) end
  if p ~= '' then merge_slot(ekey, 'p:' .. source .. '@' .. origin, p) end
  if n ~= '' then merge_slot(ekey, 'n:' .. source .. '@' .. origin, n) end
  if ev ~= '' then
    note_event(stream, dedup, ekey, skey, world, entity, ev, origin, source, self, now)
  end
end
local cur = redis.call('HGET', applied, origin)
if (not cur) or stream_id_lt(cur, last_id) then
  redis.call('HSET', applied, origin, last_id)
end
return 1
