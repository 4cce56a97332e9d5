-- Shared helpers, prepended to every worldstate script.

-- The partition this call works in (docs/ap-cluster.md §2): KEYS[1] is one of its keys, and
-- every name derived below starts with its tag ("ws:{p07}"), so on a Redis Cluster all of them
-- live in KEYS[1]'s slot. nil for scripts outside the partitioned layout (quota.lua).
local T = string.match(KEYS[1] or '', '^(.-})')

-- Resharding (docs/ap-cluster.md §11): while its slot is being migrated, a script that touches
-- a key not (or no longer) on this node fails at that command, after its earlier writes, and
-- a half-applied merge (a dedup record without its entity) is a lost observation. So every
-- script first asks for a key that never exists: on a migrating slot that is refused too,
-- before anything is written, and the caller retries once the slot has moved (TRYAGAIN). On
-- the importing side the store never sends ASKING before a script (consistency/ap_backend.py),
-- so no script runs there until the migration is over.
if T then
  local probe = redis.pcall('EXISTS', T .. ':never')
  if type(probe) == 'table' and probe.err then
    return redis.error_reply('TRYAGAIN partition ' .. T .. ' is being migrated: ' .. probe.err)
  end
end

-- Every string comparison of a merge is byte order, the order of the reference
-- model (consistency/crdt, byte_lt). Not Lua's `<`: Redis calls
-- setlocale(LC_COLLATE, "") and Lua's `<` calls strcoll, so under en_US.UTF-8
-- 'nodea' < 'node-b' and 'ra' < 'r-b' (punctuation is ignored at first), under
-- C the opposite. Two replicas started under different locales then chose
-- different winners, and neither took back a duplicate's count
-- (tests/test_crdt_lua.py found both).
-- Four bytes per string.byte call: Redis-side time of ingest.lua for 20,000
-- three-field observations, best of 5 on a shared 2-core machine, was 0.31 s
-- with `<`, 0.43 s with one byte a call, 0.38 s with four.
local byte, min = string.byte, math.min
local function bytes_lt(a, b)
  for i = 1, min(#a, #b), 4 do
    local a1, a2, a3, a4 = byte(a, i, i + 3)
    local b1, b2, b3, b4 = byte(b, i, i + 3)
    -- nil: past the end of the shorter string, which sorts first (hence -1)
    if a1 ~= b1 then return a1 < b1 end
    if a2 ~= b2 then return (a2 or -1) < (b2 or -1) end
    if a3 ~= b3 then return (a3 or -1) < (b3 or -1) end
    if a4 ~= b4 then return (a4 or -1) < (b4 or -1) end
  end
  return #a < #b
end

local function stream_id_lt(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end

-- The greatest order key this script call has seen; save_clock() keeps the
-- partition's maximum in T:clock.
local clock_max = ''

-- Last-writer-wins: the register with the greater order key ("<hlc>|<node>", the HLC
-- fixed-width hex, so byte order is (HLC, node) order) wins; on equal keys (the same
-- write) the one here stays.
-- `t` holds flat triples (name, order_key, register) from index `from` on;
-- one HMGET and one HSET cover them all. The same HMGET reads the entity's
-- tombstone (register `~deleted`, see consistency/ap_entity.py), for note_change.
-- Returns the winners as flat quads ('t:'..name, order_key, 'f:'..name, register)
-- and the tombstone's order key after the merge ('' if none).
local TOMB = 't:~deleted'
local function merge_registers(ekey, t, from)
  if #t < from then return {}, '' end
  local names = {}
  for i = from, #t, 3 do
    names[#names + 1] = 't:' .. t[i]
    local key = t[i + 1]  -- the fields of one observation share it: `==` spares a comparison
    if key ~= clock_max and bytes_lt(clock_max, key) then clock_max = key end
  end
  local n = #names
  names[n + 1] = TOMB
  local cur = redis.call('HMGET', ekey, unpack(names))
  local tomb = cur[n + 1] or ''
  local winners = {}
  for j = 1, n do
    local i = from + 3 * (j - 1)
    if (not cur[j]) or bytes_lt(cur[j], t[i + 1]) then
      winners[#winners + 1] = names[j]
      winners[#winners + 1] = t[i + 1]
      winners[#winners + 1] = 'f:' .. t[i]
      winners[#winners + 1] = t[i + 2]
      if names[j] == TOMB and bytes_lt(tomb, t[i + 1]) then tomb = t[i + 1] end
    end
  end
  if #winners > 0 then redis.call('HSET', ekey, unpack(winners)) end
  return winners, tomb
end

-- The partition's changes log (T:changes, read by service/subscriptions.py): one entry per merge that
-- changed what a reader sees, with the winning fields a reader can see (not those older
-- than the tombstone) and the tombstone itself. `winners` share one order key.
-- The cap comes from T:changes:maxlen (set by ReplicaStore), read once per script call:
-- ingest.lua's arguments are fixed (bench/ap.py drives it as the store does).
local changes_cap = nil
local function note_change(world, entity, origin, winners, tomb)
  local key = winners[2]
  if key == nil then return end
  local entry = {'w', world, 'e', entity, 'k', key, 'o', origin}
  local visible = tomb == '' or bytes_lt(tomb, key)
  for i = 1, #winners, 4 do
    if visible or winners[i] == TOMB then
      entry[#entry + 1] = winners[i + 2]
      entry[#entry + 1] = winners[i + 3]
    end
  end
  if #entry == 8 then return end
  if not changes_cap then changes_cap = redis.call('GET', T .. ':changes:maxlen') or '100000' end
  redis.call('XADD', T .. ':changes', 'MAXLEN', '~', changes_cap, '*', unpack(entry))
end

-- The dedup window: seen ids are listed per minute, so forgetting old ones is
-- a walk over whole old minutes (expire_dedup.lua) and remembering one is an RPUSH.
-- The first id a call remembers in a partition also lists its minute in T:dedup:minutes,
-- for expire_dedup.lua (every call of a script has one `now`).
local minute_noted = false
local function remember(now, skey, ev)
  local minute = math.floor(tonumber(now) / 60000)
  if not minute_noted then
    redis.call('ZADD', T .. ':dedup:minutes', minute, minute)
    minute_noted = true
  end
  redis.call('RPUSH', T .. ':dedup:' .. minute, skey .. '\n' .. ev)
  return minute
end

-- A counter slot has one writer (its origin replica); everyone else keeps the max.
local function merge_slot(ekey, slot, value)
  local v = tonumber(value)
  local cur = tonumber(redis.call('HGET', ekey, slot) or '0')
  if cur < v then redis.call('HSET', ekey, slot, value) end
end

-- Key names are derived here rather than passed in KEYS: passing 4 keys per observation
-- through the client costs more than the merge itself. Observations come grouped by partition
-- (ReplicaStore.ingest groups a batch by ap_keys.partition), so every derived name shares the tag
-- of the key being worked on (T).
local function entity_keys(world, entity)
  local ekey = T .. ':e:' .. world .. ':' .. entity
  return ekey, T .. ':s:' .. world .. ':' .. entity
end

-- Called before the first write to an entity hash: put it in its anti-entropy
-- bucket and its world's listing.
local function index_entity(ekey, world, entity)
  if redis.call('EXISTS', ekey) == 0 then
    redis.call('SADD', T .. ':b:' .. string.sub(redis.sha1hex(ekey), 1, 1), ekey)
    redis.call('ZADD', T .. ':w:' .. world, 0, entity)
    redis.call('SADD', T .. ':worlds', world)
  end
end

-- Event `ev` for (`source`) reached this replica from `origin`. Record it; if
-- this replica had itself accepted the same event from a client (a duplicate
-- posted to two regions), the region that sorts first keeps the count and this
-- one takes its own increment back with a decrement it ships to everyone.
local function note_event(stream, ekey, skey, world, entity, ev, origin, source, self, now)
  local v = redis.call('HGET', skey, ev)
  if not v then
    redis.call('HSET', skey, ev, origin .. '|' .. source)
    remember(now, skey, ev)
  elseif v == self .. '|' .. source and origin ~= self and bytes_lt(origin, self) then
    redis.call('HSET', skey, ev, v .. '!')
    local n = redis.call('HINCRBY', ekey, 'n:' .. source .. '@' .. self, 1)
    redis.call('XADD', stream, '*', 'c', cmsgpack.pack({world, entity, source}), 'n', n)
  end
end

-- Called once per script call that merged registers. A node starts its HLC past
-- every partition's T:clock (ReplicaStore.seed_clock), so a node that restarts with a fresh clock, or
-- whose wall clock stepped back, still orders its next write after every stamp
-- this replica holds, its own earlier ones and its peers' alike.
local function save_clock()
  if clock_max == '' then return end
  local cur = redis.call('GET', T .. ':clock')
  if (not cur) or bytes_lt(cur, clock_max) then redis.call('SET', T .. ':clock', clock_max) end
end

-- On one Redis a call may carry several partitions (consistency/ap_calls.py): enter(k) makes
-- KEYS[k]'s partition the one the helpers above work in. On a Redis Cluster a call carries one
-- partition, so every name a script touches lives in one slot. The changes cap is kept: the
-- store sets the same one on every partition (ap_logs.configure_changes).
local function enter(k)
  T = string.match(KEYS[k], '^(.-})')
  clock_max, minute_noted = '', false
end
