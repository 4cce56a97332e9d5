-- Trim this replica's stream: entries every peer has applied, then anything
-- over the hard cap. Remembers the newest id removed, so a shipper whose peer
-- is behind that knows it must fall back to anti-entropy.
-- KEYS: stream, trimmed marker. ARGV: maxlen, id acked by every peer ('' if unknown)
local stream, marker = KEYS[1], KEYS[2]
local removed = nil
if ARGV[2] ~= '' then
  local last = redis.call('XREVRANGE', stream, ARGV[2], '-', 'COUNT', 1)
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
