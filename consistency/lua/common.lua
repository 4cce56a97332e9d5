-- Shared helpers, prepended to every worldstate script.
-- Strings are compared with Lua's `<`, which follows LC_COLLATE; the launcher
-- starts Redis with LC_ALL=C so that is byte order on every replica.

local function stream_id_lt(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end

-- Last-writer-wins: the register with the greater order key ("<hlc>|<node>") wins.
local function merge_register(ekey, name, order_key, reg)
  local cur = redis.call('HGET', ekey, 't:' .. name)
  if (not cur) or cur < order_key then
    redis.call('HSET', ekey, 't:' .. name, order_key, 'f:' .. name, reg)
    return true
  end
  return false
end

-- A counter slot has one writer (its origin replica); everyone else keeps the max.
local function merge_slot(ekey, slot, value)
  local v = tonumber(value)
  local cur = tonumber(redis.call('HGET', ekey, slot) or '0')
  if cur < v then redis.call('HSET', ekey, slot, value) end
end

local function index_entity(ekey, bkey, wkey, world, entity)
  redis.call('SADD', bkey, ekey)
  redis.call('ZADD', wkey, 0, entity)
  redis.call('SADD', 'ws:worlds', world)
end

-- Event `ev` for (`source`) reached this replica from `origin`. Record it; if
-- this replica had itself accepted the same event from a client (a duplicate
-- posted to two regions), the region that sorts first keeps the count and this
-- one takes its own increment back with a decrement it ships to everyone.
local function note_event(stream, dedup, ekey, skey, world, entity, ev, origin, source, self, now)
  local v = redis.call('HGET', skey, ev)
  if not v then
    redis.call('HSET', skey, ev, origin .. '|' .. source)
    redis.call('ZADD', dedup, now, skey .. '\n' .. ev)
  elseif v == self .. '|' .. source and origin ~= self and origin < self then
    redis.call('HSET', skey, ev, v .. '!')
    local n = redis.call('HINCRBY', ekey, 'n:' .. source .. '@' .. self, 1)
    redis.call('XADD', stream, '*', 'w', world, 'e', entity, 'o', self, 's', source, 'n', n)
  end
end
