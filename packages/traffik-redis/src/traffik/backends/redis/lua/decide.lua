-- The program's entry (it ends with it). Before it: the helpers, FixedWindow's counter when
-- the call has counters, the transitions of the state strategies the program holds (and
-- their refunds when it gives back; scripts.py builds the programs), and STEPS, those
-- strategies by code: a code is a strategy's place in scripts.STRATEGY_SCRIPTS, 0 the counter.
-- KEYS: one key per item. ARGV[1]: the mode, one byte (MODE, read by the prelude):
--   'c' decide every item, then charge all or nothing (traffik.strategies.steps.charged);
--   'p' decide and charge nothing (a peek);
--   'l' decide items whose hit was refused elsewhere: charge only the counters that refuse;
--   'r' give each item's cost back, never past a full budget;
-- then now in ms (a little-endian double; NaN: the server's clock, TIME), then ITEM bytes per
-- key: the code (a byte) and five little-endian doubles, the limit, the period in ms, the
-- cost and the strategy's parameters (script_args) padded with 0. Packed bytes cost least on
-- both sides: the client sends (and caches) them, and one struct.unpack per item reads them.
-- The reply is a one-line status string of whole numbers (the cheapest reply for a client to
-- parse): 'allowed|wait_ms|remaining|reset_ms' per item, joined by '|'; 'OK' for 'r'.
local ITEM = 41
local args = ARGV[1]
local now, first = struct.unpack('<d', args, 2)
if now ~= now then -- the server's clock in whole ms (below 10^6 us, the floor is exact)
  local t = redis.call('TIME')
  now = t[1] * 1000 + floor(t[2] / 1000)
end
local code, limit, period, cost, x, y

if REFUND then
  for i = 1, #KEYS do
    code, limit, period, cost, x, y = struct.unpack('<Bddddd', args, first + (i - 1) * ITEM)
    if code == 0 then
      counter_refund(KEYS[i], cost)
    else
      local state = load_state(KEYS[i])
      if state ~= nil then
        save_state(KEYS[i], STEPS[code].refund(state, now, limit, period, cost, x, y))
      end
    end
  end
  return {ok = 'OK'}
end

-- Decide every item on the state as it stands: states[i] is an admitted state strategy's new
-- state (nil for a counter), false when the item refused; ttls[i] its time to live.
local n = #KEYS
local reply, states, ttls, refused = nil, {}, {}, false
for i = 1, n do
  code, limit, period, cost, x, y = struct.unpack('<Bddddd', args, first + (i - 1) * ITEM)
  local admitted, wait, remaining, reset, text
  if code == 0 then
    admitted, wait, remaining, reset = counter_decide(KEYS[i], limit, period, cost)
  else
    admitted, wait, remaining, reset, states[i], ttls[i] =
      STEPS[code].transition(load_state(KEYS[i]), now, limit, period, cost, x, y)
  end
  if admitted then
    text = string.format('1|0|%d|%d', remaining, reset)
  else
    refused = true
    states[i] = false
    text = string.format('0|%d|%d|%d', wait, remaining, reset)
  end
  reply = reply and reply .. '|' .. text or text
end

-- Then charge: every item when all admit, else only the counters that refused.
if MODE ~= 112 then -- not a peek
  local all = MODE == 99 and not refused -- 'c'
  for i = 1, n do
    local state = states[i]
    if state then
      if all then
        save_state(KEYS[i], state, ttls[i])
      end
    elseif all or state == false then -- a counter (state nil) admitted, or any item refused
      code, limit, period, cost = struct.unpack('<Bddd', args, first + (i - 1) * ITEM)
      if code == 0 then
        counter_charge(KEYS[i], period, cost)
      end
    end
  end
end
return {ok = reply}
