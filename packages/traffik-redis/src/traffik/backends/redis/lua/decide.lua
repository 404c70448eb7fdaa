-- The program's entry (it ends with it). Before it: the prelude, FixedWindow's counter when
-- the call has counters, and the helpers of the state strategies the program holds.
-- scripts.py builds the programs, and puts in the loop below, where it says STRATEGIES, the
-- body of each of those strategies (its Lua file) under `if code == <its code> then`: a code
-- is a strategy's place in scripts.STRATEGY_SCRIPTS, 0 the counter. A body reads `raw`, the
-- stored value (a GET reply: each strategy reads its own state, with `numbers` (scripts.py) or
-- _lists.lua; PriorityQueue reads the ranges it needs of KEYS[i] itself), now, the item's
-- numbers (limit, period, cost, x, y) and REFUND; deciding, it sets admitted, wait, remaining
-- and reset, and when admitted `state` (the value to store, or changes to it, see below) and
-- `ttl` (its time to live in ms); refused, `state` and `ttl` only when it read a state of
-- another rate that this rate's bucket can hold whatever it holds, written as this rate's
-- holding exactly what it holds (charging nothing: _rescaled.lua,
-- traffik.strategies._another_rate.converted); giving back, state and ttl only, or
-- nothing when there is nothing to give back to. A refund runs only on a state (of any
-- size, as in Python). A body whose decision tells another limit than the item's
-- (TimeOfDay's: its hour's) sets `told`.
-- Bodies, not functions: Redis runs the whole program on every call, and a function costs
-- its definition, one more for each helper it reaches, and its call.
-- KEYS: one key per item. ARGV[1]: the mode, one byte (MODE):
--   'c' decide every item, then charge all or nothing (traffik.strategies.steps.charged:
--       only a refusing counter that is the call's one item counts the hit, unless its
--       cost is above its limit);
--   'g' as 'c' for a group of the items of a larger step (decided group by group, steps.py
--       `_in_order`): a refusing counter counts nothing, even the group's one item;
--   'p' decide and charge nothing (a peek);
--   'v' as 'p' for the groups after a refusing one (`_in_order`), but store what refusing
--       items converted from another rate's state, as a refused 'g' does (and cut a window
--       that ends too late);
--   'r' give each item's cost back, never past a full budget;
--   's' hits on one key in turn (coalesced: KEYS all the same, each item a hit of a strategy
--       with a state of a fixed size): each decided on the state the hits before it left,
--       charged alone (admitted or not, as if sequential), the last state stored once;
-- then now in ms (a little-endian double; NaN: the server's clock, TIME), then ITEM bytes per
-- key: the code (a byte) and five little-endian doubles, the limit, the period in ms, the
-- cost and the strategy's parameters (script_args) padded with 0. Packed bytes cost least on
-- both sides: the client sends (and caches) them, and one struct.unpack per item reads them
-- (the prelude reads the first with the mode and now). ARGV[2] on: the tables of the items
-- whose strategy has one (script_table: TimeOfDay's day of limits), little-endian doubles,
-- in item order; such an item's y is its table's place in ARGV.
-- The reply is a string of whole numbers, 'allowed|wait_ms|remaining|reset_ms' per item,
-- then '|limit' for an item whose body sets `told`, joined by '|' ('OK' for 'r'): a bulk
-- string costs the server least, and the client one split.
-- An item's bytes, where the first starts, and whether now is the server's (NaN: TIME's).
local ITEM, FIRST, SERVER, SEQ = 41, 10, now ~= now, MODE == 115 -- 's'
if SERVER then -- the server's clock in whole ms (below 10^6 us, the floor is exact)
  local t = redis.call('TIME')
  local ms = t[2] / 1000
  now = t[1] * 1000 + (ms - ms % 1)
end

-- Decide (or give back) every item on the state as it stands. `state` and `ttl` are the
-- last item's; each item's before it wait in `pending` (pending[2i - 1], pending[2i]), a
-- table made only for calls with several items: most have one. A counter has no state, and
-- a refused item has false, or the state it converted from another rate's: `converted` lists
-- such items (a table made only when there is one), whose states a refused call stores.
local n, reply, pending, refused, state, ttl = #KEYS, nil, nil, false, nil, nil
local converted = nil
-- 's': the value the hits so far left (the stored one, then each admitted hit's state) and
-- the time to live of the last admitted hit's (nil: none admitted, nothing to store).
local carried, life = nil, nil
for i = 1, n do
  if i > 1 and not SEQ then
    pending = pending or {}
    pending[2 * i - 3], pending[2 * i - 2] = state, ttl
  end
  if i > 1 then
    code, limit, period, cost, x, y = struct.unpack('<Bddddd', ARGV[1], FIRST + (i - 1) * ITEM)
  end
  state, ttl = nil, nil
  local admitted, wait, remaining, reset, raw, told
  if code == 0 then
    if REFUND then
      counter_refund(KEYS[i], cost)
    else
      admitted, wait, remaining, reset = counter_decide(KEYS[i], limit, period, cost)
    end
  else
    -- PriorityQueue (9) reads what it needs of its state itself (a log of any length, read
    -- in ranges, priority_queue.lua), and gives back only to one.
    raw = false
    if SEQ and i > 1 then
      raw = carried
    elseif code ~= 9 then
      raw = redis.pcall('GET', KEYS[i])
      if raw and raw.err then -- another type at the key (WRONGTYPE): no state; PSETEX replaces it
        if raw.err:sub(1, 9) ~= 'WRONGTYPE' then -- any other error (an ACL refusal): the script's
          error(raw)
        end
        raw = false
      end
    end
    -- A body whose state records a later time than now (written by a host whose clock is
    -- ahead), by at most 60000 ms (traffik.strategies.base.AHEAD_MS; further is a clock gone
    -- wrong: no state, base.dated), decides at that time, setting now to it; the wait, a reset
    -- (when not 0) and the TTL are then told from the call's now (traffik.strategies.base.later).
    local clock = now
    if code == 9 or not REFUND or load_state(raw, 105) or load_state(raw, 104) then -- 'i', 'h'
      --[[ STRATEGIES ]]
    end
    if now ~= clock then
      local shift = now - clock
      now = clock
      if admitted == false then
        wait = wait + shift
      end
      if reset and reset > 0 then
        reset = reset + shift
      end
      if state and ttl then
        ttl = ttl + shift
      end
    end
  end
  if not REFUND then
    local text
    if admitted then
      text = string.format('1|0|%d|%d', remaining, reset)
    else
      refused = true
      if state then -- converted from another rate's state
        converted = converted or {}
        converted[#converted + 1] = i
      else
        state = false
      end
      text = string.format('0|%d|%d|%d', wait, remaining, reset)
    end
    if told then
      text = text .. string.format('|%d', told)
    end
    reply = reply and reply .. '|' .. text or text
  end
  if SEQ then
    if state then
      carried, life = state, ttl
    elseif i == 1 then
      carried = raw
    end
  end
end

-- Then charge (or store what was given back): every item when all admit; else nothing, but
-- the counter of a 'c' call of one item, which counts the hit it refuses. A state is stored
-- to be gone `ttl` ms from now: Redis keeps a key through the millisecond of its expiry, so
-- PX is one less (and at least 1, the shortest life Redis gives). PSETEX with the time as
-- digits costs the server least ('%d' prints no float). A state may be a table instead:
-- changes to the stored value in place, offsets and bytes for SETRANGE (PriorityQueue's),
-- then PEXPIRE; with `ttl` false, no PEXPIRE (the time to live the value has is the one it
-- would get, see priority_queue.lua). Each item decided on the value as the call found it,
-- so where keys meet the last item's state is the one stored (as if each were stored in
-- turn), and the others are not written. A refused call of several items (or of a group)
-- stores only what its refusing items converted from another rate's state, in item order.
if SEQ then
  if life then
    life = life - 1
    redis.call('PSETEX', KEYS[1], string.format('%d', life < 1 and 1 or life), carried)
  end
elseif MODE ~= 112 and (not refused and MODE ~= 118 or n == 1 and MODE == 99) then -- charged
  for i = 1, n do
    local new, px, later = state, ttl, false
    if i < n then
      new, px = pending[2 * i - 1], pending[2 * i]
      for j = i + 1, new and n or 0 do
        later = later or KEYS[j] == KEYS[i] and (j < n and pending[2 * j - 1] or j == n and state)
      end
    end
    if new then -- admitted (a refused call of several items stores nothing), or given back
      if not later then
        if px then
          px = px - 1
          if px < 1 then
            px = 1
          end
        end
        if new[1] then -- a table (a string has no [1]: its metatable's is the string library)
          for k = 1, #new, 2 do
            redis.call('SETRANGE', KEYS[i], new[k], new[k + 1])
          end
          if px then
            redis.call('PEXPIRE', KEYS[i], string.format('%d', px))
          end
        else
          redis.call('PSETEX', KEYS[i], string.format('%d', px), new)
        end
      end
    elseif new == false or not REFUND then -- refused alone, or admitted: a counter counts
      code, limit, period, cost = struct.unpack('<Bddd', ARGV[1], FIRST + (i - 1) * ITEM)
      if code == 0 and cost <= limit then -- (a cost above the limit is never admitted: nothing)
        counter_charge(KEYS[i], period, cost)
      end
    end
  end
elseif converted and MODE ~= 112 then -- refused: only what refusing items converted
  for _, i in ipairs(converted) do
    local new, px = state, ttl
    if i < n then
      new, px = pending[2 * i - 1], pending[2 * i]
    end
    px = px - 1
    redis.call('PSETEX', KEYS[i], string.format('%d', px < 1 and 1 or px), new)
  end
end
return reply or 'OK'
