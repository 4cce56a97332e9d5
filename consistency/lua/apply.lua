-- Deltas from one peer's stream, applied with the same merge rules; replaying
-- any of them changes nothing.
-- KEYS: stream, dedup, applied, then per entry: entity, seen, bucket, world index
-- ARGV: self, now_ms, origin, last_id, then per entry: world, entity, event_id
--       ('' for a counter-only entry), source, p, n ('' when absent), nfields,
--       then nfields x (name, order_key, register)
local self, now, origin, last_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local stream, dedup, applied = KEYS[1], KEYS[2], KEYS[3]
local a, k = 5, 4
while a <= #ARGV do
  local world, entity, ev, source = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local p, n, nfields = ARGV[a + 4], ARGV[a + 5], tonumber(ARGV[a + 6])
  local ekey, skey, bkey, wkey = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  a, k = a + 7, k + 4
  for _ = 1, nfields do
    merge_register(ekey, ARGV[a], ARGV[a + 1], ARGV[a + 2])
    a = a + 3
  end
  if p ~= '' then merge_slot(ekey, 'p:' .. source .. '@' .. origin, p) end
  if n ~= '' then merge_slot(ekey, 'n:' .. source .. '@' .. origin, n) end
  if ev ~= '' then
    note_event(stream, dedup, ekey, skey, world, entity, ev, origin, source, self, now)
  end
  index_entity(ekey, bkey, wkey, world, entity)
end
local cur = redis.call('HGET', applied, origin)
if (not cur) or stream_id_lt(cur, last_id) then
  redis.call('HSET', applied, origin, last_id)
end
return 1
