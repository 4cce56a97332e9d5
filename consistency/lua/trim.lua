-- Trim this replica's stream: entries every peer has applied, then anything
-- over the hard cap. Remembers the newest id removed, so a shipper whose peer
-- is behind that knows it must fall back to anti-entropy.
-- KEYS: stream, trimmed marker, registered consumers. ARGV: maxlen, id acked by every peer ('' if unknown)
local stream, marker = KEYS[1], KEYS[2]
local removed = nil
local floor = ARGV[2]
-- A registered consumer (a learner, learn/log.py) holds the floor at the last id it consumed.
-- Read here rather than by the caller, so a consumer registered (or moved back) just before
-- cannot be trimmed past. Consumers only lower a floor the peers set; the cap below still trims.
if floor ~= '' and KEYS[3] then
  for _, at in ipairs(redis.call('HVALS', KEYS[3])) do
    if stream_id_lt(at, floor) then floor = at end
  end
end
if floor ~= '' then
  local last = redis.call('XREVRANGE', stream, floor, '-', 'COUNT', 1)
  if #last > 0 then
    removed = last[1][1]
    local ms, seq = string.match(removed, '^(%d+)-(%d+)$')
    redis.call('XTRIM', stream, 'MINID', ms .. '-' .. string.format('%d', tonumber(seq) + 1))
  end
end
local len, maxlen = redis.call('XLEN', stream), tonumber(ARGV[1])
if len > maxlen then
  local victims = redis.call('XRANGE', stream, '-', '+', 'COUNT', len - maxlen)
  removed = victims[#victims][1]
  redis.call('XTRIM', stream, 'MAXLEN', maxlen)
end
if removed then
  local cur = redis.call('GET', marker)
  if (not cur) or stream_id_lt(cur, removed) then redis.call('SET', marker, removed) end
end
return removed or ''
