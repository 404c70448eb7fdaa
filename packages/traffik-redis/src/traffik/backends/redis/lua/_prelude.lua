-- The program's helpers (it starts with them). Mirrors traffik.strategies.base: a strategy
-- decides in whole numbers (time in ms, fractional quantities scaled by the period), all below
-- 2^53, which Lua's doubles hold exactly. Sums, differences and products are then exact, and
-- every division goes through floordiv or ceildiv, which round like Python's // whatever the
-- double quotient does. A state is stored as 'i' followed by little-endian doubles, each a
-- whole number; anything else counts as no state (a fresh key), including the '#' states of
-- the float-era scripts, whose units differ.
if redis.replicate_commands then
  redis.replicate_commands()
end

local EXACT = 2 ^ 53

-- Python's a // b for whole numbers (b > 0, any sign of a): the floor of the double
-- quotient, checked against the exact products (it can be one off only near 2^53).
local function floordiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    return q - 1
  end
  if (q + 1) * b <= a then
    return q + 1
  end
  return q
end

-- traffik.strategies.base.ceil_div: a / b rounded up (b > 0).
local function ceildiv(a, b)
  return -floordiv(-a, b)
end

-- The server's clock in whole ms (TIME).
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + floordiv(tonumber(t[2]), 1000)
end

-- The state stored under `key` as a list of whole numbers, or nil when missing or not ours.
local function load_state(key)
  local raw = redis.call('GET', key)
  if not raw or string.byte(raw, 1) ~= 105 then -- 'i'
    return nil
  end
  local n = (#raw - 1) / 8
  if n ~= math.floor(n) then
    return nil
  end
  local state, pos, v = {}, 2, 0
  for i = 1, n do
    v, pos = struct.unpack('<d', raw, pos)
    if v ~= math.floor(v) or v <= -EXACT or v >= EXACT then -- NaN, infinities, fractions
      return nil
    end
    state[i] = v
  end
  return state
end

-- Stores the state to be gone `ttl_ms` from now: Redis keeps a key through the millisecond
-- of its expiry, so PX is one less (and at least 1, the shortest life Redis gives).
local function save_state(key, state, ttl_ms)
  local parts = {'i'}
  for i = 1, #state do
    parts[i + 1] = struct.pack('<d', state[i])
  end
  redis.call('SET', key, table.concat(parts), 'PX', math.max(ttl_ms - 1, 1))
end

-- Takes `back` off the newest entries of a list of {time, amount} pairs (a log, a queue),
-- dropping each entry it empties: how refunds give units back to a log or a queue.
local function take_newest(entries, back)
  local n = #entries
  while n > 0 and back ~= 0 do
    local taken = math.min(entries[n], back)
    entries[n] = entries[n] - taken
    back = back - taken
    if entries[n] == 0 then
      entries[n], entries[n - 1] = nil, nil
      n = n - 2
    end
  end
end
