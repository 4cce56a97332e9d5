-- A read of one partition's changes log (KEYS[1], its T:changes) and where the log stands, in one step, so that
-- nothing can be trimmed between the read and the check of what was.
-- ARGV: after (a stream id), count (0: no read), mode ('read': the entries, 'count': how many)
-- Returns {last generated id, entries ever added, entries held, oldest id held (the last
-- generated id when it holds none), entries or count}
-- (XINFO's max-deleted-entry-id would not do: trimming, unlike XDEL, leaves it alone.)
local log = KEYS[1]
if redis.call('EXISTS', log) == 0 then return {'0-0', 0, 0, '0-0', {}} end
local info = redis.call('XINFO', 'STREAM', log)
local f = {}
for i = 1, #info, 2 do f[info[i]] = info[i + 1] end
local first = f['first-entry'] and f['first-entry'][1] or f['last-generated-id']
local out = {f['last-generated-id'], f['entries-added'], f['length'], first, {}}
local n = tonumber(ARGV[2])
if n > 0 then
  local entries = redis.call('XRANGE', log, '(' .. ARGV[1], '+', 'COUNT', n)
  if ARGV[3] == 'count' then out[5] = #entries else out[5] = entries end
end
return out
