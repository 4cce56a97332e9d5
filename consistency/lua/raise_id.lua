-- After a failover (consistency/ap_failover.py): move the partition stream's last id up to every id
-- anyone recorded of it, never down, so the new master never issues an id a reader already took as
-- "seen": a peer's T:applied (passed in), our T:acked and T:consumers (read here: an offset written
-- to the new master after it was read from the old one can be ahead of what the new master holds).
-- KEYS: stream, acked hash, consumers hash. ARGV: the greatest id the peers applied of it ('0-0': none)
-- Returns the stream's last id afterwards.
local stream = KEYS[1]
local target = ARGV[1]
for k = 2, 3 do
  for _, at in ipairs(redis.call('HVALS', KEYS[k])) do
    if stream_id_lt(target, at) then target = at end
  end
end
if redis.call('EXISTS', stream) == 0 then
  if target == '0-0' then return '0-0' end
  -- XSETID refuses a missing key: an entry at the target, removed at once, leaves an empty stream
  -- whose last id is the target (one script: no reader sees the entry).
  redis.call('XADD', stream, target, 'x', '')
  redis.call('XDEL', stream, target)
  return target
end
local cur = redis.call('XINFO', 'STREAM', stream)
local last
for i = 1, #cur, 2 do
  if cur[i] == 'last-generated-id' then last = cur[i + 1] end
end
-- XSETID would also *lower* the last id down to the newest entry (Redis 7.0): only ever raise it.
if stream_id_lt(last, target) then
  redis.call('XSETID', stream, target)
  return target
end
return last
