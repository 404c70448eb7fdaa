-- The program's helpers (it starts with them). Mirrors traffik.strategies.base: a strategy
-- decides in whole numbers (time in ms, fractional quantities scaled by the period), all below
-- 2^53, which Lua's doubles hold exactly. Sums, differences and products are then exact, and
-- every division goes through floordiv or ceildiv, which round like Python's // whatever the
-- double quotient does. A state is stored as 'i' followed by little-endian doubles, each a
-- whole number; anything else counts as no state (a fresh key), including the '#' states of
-- the float-era scripts, whose units differ. Redis runs these definitions on every call, so
-- they are few, and the state is read and written with one struct call per CHUNK numbers.
if redis.replicate_commands then
  redis.replicate_commands()
end

local MODE = string.byte(ARGV[1], 1) -- see decide.lua
local REFUND = MODE == 114 -- 'r': modules define their refunds only then
local EXACT = 2 ^ 53
local CHUNK = 256 -- numbers per struct call: far below Lua's limit on results
local floor, min, max = math.floor, math.min, math.max

-- Python's a // b for whole numbers (b > 0, any sign of a): the floor of the double
-- quotient, checked against the exact products (it can be one off only near 2^53).
local function floordiv(a, b)
  local q = floor(a / b)
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

-- The state stored under `key` as a list of whole numbers, or nil when missing or not ours.
local function load_state(key)
  local raw = redis.call('GET', key)
  if not raw or string.byte(raw, 1) ~= 105 then -- 'i'
    return nil
  end
  local n = (#raw - 1) / 8
  if n ~= floor(n) then
    return nil
  end
  local head = min(n, CHUNK)
  local state = {struct.unpack('<' .. string.rep('d', head), raw, 2)}
  local pos = state[head + 1]
  state[head + 1] = nil
  for first = CHUNK + 1, n, CHUNK do -- long logs only
    local values = {struct.unpack('<' .. string.rep('d', min(CHUNK, n - first + 1)), raw, pos)}
    pos = table.remove(values)
    for i = 1, #values do
      state[first + i - 1] = values[i]
    end
  end
  for i = 1, n do
    local v = state[i]
    if v ~= floor(v) or v <= -EXACT or v >= EXACT then -- NaN, infinities, fractions
      return nil
    end
  end
  return state
end

-- Stores the state to be gone `ttl_ms` from now: Redis keeps a key through the millisecond
-- of its expiry, so PX is one less (and at least 1, the shortest life Redis gives). PSETEX
-- with the time as digits costs the server least ('%d' prints no float).
local function save_state(key, state, ttl_ms)
  local n = #state
  local head = min(n, CHUNK)
  local raw = struct.pack('<c' .. string.rep('d', head), 'i', unpack(state, 1, head))
  for first = CHUNK + 1, n, CHUNK do -- long logs only
    local last = min(first + CHUNK - 1, n)
    raw = raw .. struct.pack('<' .. string.rep('d', last - first + 1), unpack(state, first, last))
  end
  redis.call('PSETEX', key, string.format('%d', max(ttl_ms - 1, 1)), raw)
end
