-- The program's entry (it ends with it). Before it: the helpers, FixedWindow's counter, the
-- transitions and refunds of the state strategies the program holds (scripts.py builds one
-- program per strategy module and one with every module), and STEPS, those strategies by
-- code: a code is a strategy's place in scripts.STRATEGY_SCRIPTS, 0 the counter.
-- KEYS: one key per item. ARGV[1]: the mode, one byte:
--   'c' decide every item, then charge all or nothing (traffik.strategies.steps.charged);
--   'p' decide and charge nothing (a peek);
--   'l' decide items whose hit was refused elsewhere: charge only the counters that refuse;
--   'r' give each item's cost back, never past a full budget;
-- then now in ms (a little-endian double; NaN: the server's clock, TIME), then 41 bytes per
-- key: the code (a byte) and five little-endian doubles, the limit, the period in ms, the
-- cost and the strategy's parameters (script_args) padded with 0. Packed bytes cost least on
-- both sides: the client sends (and caches) them, and one struct.unpack per item reads them.
-- The reply is a one-line status string of whole numbers (the cheapest reply for a client to
-- parse): 'allowed|wait_ms|remaining|reset_ms' per item, joined by '|'; 'OK' for 'r'.
local args = ARGV[1]
local mode = string.sub(args, 1, 1)
local now, first = struct.unpack('<d', args, 2)
if now ~= now then
  now = server_ms()
end
local code, limit, period, cost, x, y
local pos = first

if mode == 'r' then
  for i = 1, #KEYS do
    code, limit, period, cost, x, y, pos = struct.unpack('<Bddddd', args, pos)
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

-- Decide every item on the state as it stands; states[i] is the new state (false: refused).
local reply, states, ttls, refused = nil, {}, {}, false
for i = 1, #KEYS do
  code, limit, period, cost, x, y, pos = struct.unpack('<Bddddd', args, pos)
  local admitted, wait, remaining, reset, text
  if code == 0 then
    admitted, wait, remaining, reset = counter_decide(KEYS[i], limit, period, cost)
  else
    admitted, wait, remaining, reset, states[i], ttls[i] =
      STEPS[code].transition(load_state(KEYS[i]), now, limit, period, cost, x, y)
  end
  if admitted then
    text = string.format('1|0|%.0f|%.0f', remaining, reset)
  else
    refused = true
    states[i] = false
    text = string.format('0|%.0f|%.0f|%.0f', wait, remaining, reset)
  end
  reply = reply and reply .. '|' .. text or text
end

-- Then charge: every item when all admit, else only the counters that refused.
if mode ~= 'p' then
  local all = mode == 'c' and not refused
  pos = first
  for i = 1, #KEYS do
    code, limit, period, cost, x, y, pos = struct.unpack('<Bddddd', args, pos)
    if code == 0 then
      if all or states[i] == false then
        counter_charge(KEYS[i], period, cost)
      end
    elseif all and states[i] then
      save_state(KEYS[i], states[i], ttls[i])
    end
  end
end
return {ok = reply}
