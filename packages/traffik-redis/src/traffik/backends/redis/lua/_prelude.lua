-- Shared by every strategy script (prepended at load time). Mirrors traffik.strategies.base.
-- KEYS[1]: the state key. ARGV[1]: the arguments packed in 49 bytes, read by `numbers()`:
-- '1' to write the new state or '0' to only read, then six little-endian doubles: now in
-- ms (NaN: the server's clock, TIME) and strategy.script_args() padded with 0 to five.
-- One packed argument is exact and costs least on both sides: the client sends one
-- argument (it caches it) instead of seven, and struct.unpack here is one call where
-- string.match and tonumber would be six.
-- The reply is a status string, 'allowed|wait_ms|remaining|reset_ms' ('%.17g' round-trips
-- a double; Redis would truncate Lua numbers in a reply): a client parses a status reply
-- (one line) faster than a bulk string, and either far faster than an array. The state is
-- stored as '#' followed by little-endian doubles (struct.pack), exact and cheap to write
-- and read; text states ('1.5,2') written by earlier versions are still read.
if redis.replicate_commands then
  redis.replicate_commands()
end

local EPSILON = 1e-6
local KEY = KEYS[1]
local NOW, COMMIT = 0, false

-- The script's five numbers; reads now and commit on the way. Call it first.
local function numbers()
  local commit, now, a, b, c, d, e = struct.unpack('<c1dddddd', ARGV[1])
  NOW, COMMIT = now, commit == '1'
  return a, b, c, d, e
end

local function now_ms()
  if NOW == NOW then
    return NOW
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end

local function whole_ms(wait)
  return math.max(1, math.ceil(wait - EPSILON))
end

-- Python's float floor division (CPython float_divmod), for positive operands.
local function floordiv(a, b)
  local mod = math.fmod(a, b)
  local div = (a - mod) / b
  if div == 0 then
    return 0.0
  end
  local floored = math.floor(div)
  if div - floored > 0.5 then
    floored = floored + 1
  end
  return floored
end

-- A state's numbers, or nil when any is not finite.
local function finite(state)
  for i = 1, #state do
    local v = state[i]
    if v ~= v or v == math.huge or v == -math.huge then
      return nil
    end
  end
  return state
end

-- The state as a list of finite numbers, or nil when missing or unreadable (a fresh key).
local function load_state()
  local raw = redis.call('GET', KEY)
  if not raw then
    return nil
  end
  local state = {}
  if string.byte(raw, 1) == 35 then -- '#': packed doubles
    local n = (#raw - 1) / 8
    if n ~= math.floor(n) then
      return nil
    end
    local pos = 2
    for i = 1, n do
      state[i], pos = struct.unpack('<d', raw, pos)
    end
    return finite(state)
  end
  if raw == '' then
    return state
  end
  -- Text, comma-separated: what earlier versions wrote.
  local pos = 1
  while true do
    local comma = string.find(raw, ',', pos, true)
    local v = tonumber(string.sub(raw, pos, comma and comma - 1 or -1))
    if v == nil then
      return nil
    end
    state[#state + 1] = v
    if not comma then
      return finite(state)
    end
    pos = comma + 1
  end
end

-- The TTL goes to Redis as a Lua number: Redis writes an integral one as an integer.
local function save_state(state, ttl_ms)
  if not COMMIT then
    return
  end
  local parts = {'#'}
  for i = 1, #state do
    parts[i + 1] = struct.pack('<d', state[i])
  end
  redis.call('SET', KEY, table.concat(parts), 'PX', math.ceil(ttl_ms))
end

-- remaining and wait are whole numbers ('%.0f' prints them without exponent at any size).
local function allowed(remaining, reset_ms)
  return {ok = string.format('1|0|%.0f|%.17g', remaining, reset_ms)}
end

local function rejected(wait_ms, remaining, reset_ms)
  return {ok = string.format('0|%.0f|%.0f|%.17g', wait_ms, remaining, reset_ms)}
end
