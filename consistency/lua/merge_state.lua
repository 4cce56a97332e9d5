-- Anti-entropy: whole entities from a peer (its hash and its seen events),
-- merged field by field; used when the peer's stream no longer holds what we missed.
-- KEYS: stream
-- ARGV: self, now_ms, peer (the region shipping), then per entity: world, entity, nstate,
--       nstate x (field, value), nseen, nseen x (event_id, "origin|source[!]")
local self, now, peer = ARGV[1], ARGV[2], ARGV[3]
local stream = KEYS[1]
local a = 4
while a <= #ARGV do
  local world, entity, nstate = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local ekey, skey = entity_keys(world, entity)
  a = a + 3
  local state = {}
  for _ = 1, nstate do
    state[ARGV[a]] = ARGV[a + 1]
    a = a + 2
  end
  index_entity(ekey, world, entity)
  -- Registers grouped by order key (one group per write), merged in key order, so the
  -- changes log lists this entity's winning writes in the order last-writer-wins ranks them.
  local groups, keys = {}, {}
  for field, value in pairs(state) do
    local kind, name = string.sub(field, 1, 2), string.sub(field, 3)
    if kind == 't:' then
      local g = groups[value]
      if not g then
        g = {}
        groups[value] = g
        keys[#keys + 1] = value
      end
      g[#g + 1] = name
      g[#g + 1] = value
      g[#g + 1] = state['f:' .. name]
    elseif kind == 'p:' or kind == 'n:' then
      merge_slot(ekey, field, value)
    end
  end
  table.sort(keys, bytes_lt)
  for _, key in ipairs(keys) do
    local winners, tomb = merge_registers(ekey, groups[key], 1)
    note_change(world, entity, peer, winners, tomb)
  end
  local nseen = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, nseen do
    local ev, v = ARGV[a], ARGV[a + 1]
    a = a + 2
    local origin, source = string.match(v, '^([^|]*)|(.-)!?$')
    note_event(stream, ekey, skey, world, entity, ev, origin, source, self, now)
  end
end
save_clock()
return 1
