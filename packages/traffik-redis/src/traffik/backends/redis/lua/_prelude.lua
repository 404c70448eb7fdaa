-- Shared by every strategy script (prepended at load time). Mirrors traffik.strategies.base.
-- KEYS[1]: the state key. ARGV[1]: now in ms, or '' for the server's clock (TIME);
-- ARGV[2]: '1' to write the new state, '0' to only read; ARGV[3..]: strategy.script_args().
-- Numbers travel as strings ('%.17g' round-trips a double): Redis would truncate Lua numbers.
if redis.replicate_commands then
  redis.replicate_commands()
end

local EPSILON = 1e-6
local KEY = KEYS[1]
local COMMIT = ARGV[2] == '1'

local function now_ms()
  if ARGV[1] ~= '' then
    return tonumber(ARGV[1])
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end

local function arg(i)
  return tonumber(ARGV[i])
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

local function num(x)
  return string.format('%.17g', x)
end

-- The state as a list of finite numbers, or nil when missing or unreadable (a fresh key).
local function load_state()
  local raw = redis.call('GET', KEY)
  if not raw then
    return nil
  end
  local state = {}
  if raw == '' then
    return state
  end
  local pos = 1
  while true do
    local comma = string.find(raw, ',', pos, true)
    local v = tonumber(string.sub(raw, pos, comma and comma - 1 or -1))
    if v == nil or v ~= v or v == math.huge or v == -math.huge then
      return nil
    end
    state[#state + 1] = v
    if not comma then
      return state
    end
    pos = comma + 1
  end
end

local function save_state(state, ttl_ms)
  if not COMMIT then
    return
  end
  local parts = {}
  for i = 1, #state do
    parts[i] = num(state[i])
  end
  redis.call('SET', KEY, table.concat(parts, ','), 'PX', string.format('%.0f', math.ceil(ttl_ms)))
end

local function allowed(remaining, reset_ms)
  return {'1', '0', num(remaining), num(reset_ms)}
end

local function rejected(wait_ms, remaining, reset_ms)
  return {'0', num(wait_ms), num(remaining), num(reset_ms)}
end
