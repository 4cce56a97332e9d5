-- One digest per key bucket of one partition's merged entity state (not its
-- dedup records, which differ between replicas by design).
-- KEYS: a key of the partition (its stream). ARGV: nbuckets. Reads the partition's T:b:<x> sets.
local out = {}
for b = 0, tonumber(ARGV[1]) - 1 do
  local members = redis.call('SMEMBERS', T .. string.format(':b:%x', b))
  if #members == 0 then
    out[#out + 1] = ''
  else
    table.sort(members, bytes_lt)  -- not `<`: the digest must not depend on the locale
    local parts = {}
    for _, ekey in ipairs(members) do
      local kv = redis.call('HGETALL', ekey)
      local fields, values = {}, {}
      for i = 1, #kv, 2 do
        fields[#fields + 1] = kv[i]
        values[kv[i]] = kv[i + 1]
      end
      table.sort(fields, bytes_lt)
      parts[#parts + 1] = ekey
      for _, f in ipairs(fields) do
        parts[#parts + 1] = f .. ':' .. #values[f] .. ':' .. values[f]
      end
    end
    out[#out + 1] = redis.sha1hex(table.concat(parts, '\n'))
  end
end
return out
