-- Shared by every strategy script (prepended at load time). Mirrors traffik.strategies.base:
-- a strategy decides in whole numbers (time in ms, fractional quantities scaled by the
-- period), all below 2^53, which Lua's doubles hold exactly. Sums, differences and products
-- are then exact, and every division goes through floordiv or ceildiv, which round like
-- Python's // whatever the double quotient does.
-- KEYS[1]: the state key. ARGV[1]: the arguments packed in 49 bytes, read by `numbers()`:
-- '1' to write the new state or '0' to only read, then six little-endian doubles: now in
-- ms (NaN: the server's clock, TIME) and strategy.script_args() padded with 0 to five.
-- One packed argument costs least on both sides: the client sends (and caches) one
-- argument instead of seven, and struct.unpack here is one call where tonumber would be six.
-- The reply is a status string of whole numbers, 'allowed|wait_ms|remaining|reset_ms' (a
-- client parses a one-line status reply faster than a bulk string or an array). The state
-- is stored as 'i' followed by little-endian doubles, each a whole number; anything else
-- counts as no state (a fresh key), including the '#' states of the float-era scripts,
-- whose units differ.
if redis.replicate_commands then
  redis.replicate_commands()
end

local EXACT = 2 ^ 53
local KEY = KEYS[1]
local NOW, COMMIT = 0, false

-- The script's five numbers; reads now and commit on the way. Call it first.
local function numbers()
  local commit, now, a, b, c, d, e = struct.unpack('<c1dddddd', ARGV[1])
  NOW, COMMIT = now, commit == '1'
  return a, b, c, d, e
end

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

local function now_ms()
  if NOW == NOW then
    return NOW
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + floordiv(tonumber(t[2]), 1000)
end

-- The stored state as a list of whole numbers, or nil when missing or not ours.
local function load_state()
  local raw = redis.call('GET', KEY)
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
local function save_state(state, ttl_ms)
  if not COMMIT then
    return
  end
  local parts = {'i'}
  for i = 1, #state do
    parts[i + 1] = struct.pack('<d', state[i])
  end
  redis.call('SET', KEY, table.concat(parts), 'PX', math.max(ttl_ms - 1, 1))
end

-- '%.0f' prints a whole number without exponent at any size.
local function allowed(remaining, reset_ms)
  return {ok = string.format('1|0|%.0f|%.0f', remaining, reset_ms)}
end

local function rejected(wait_ms, remaining, reset_ms)
  return {ok = string.format('0|%.0f|%.0f|%.0f', wait_ms, remaining, reset_ms)}
end
