-- LeakyBucket.transition. State: {level, last_ms}.
-- numbers(), the first 3: limit, period_ms, cost.
local limit, period, cost = numbers()
local now = now_ms()
local level = 0.0
local state = load_state()
if state ~= nil and #state == 2 then
  level = math.max(0.0, state[1] - math.max(now - state[2], 0.0) * limit / period)
end
local leak = limit / period
if level + cost <= limit + EPSILON then
  level = level + cost
  local reset = level / leak
  save_state({level, now}, math.max(reset, 1.0))
  return allowed(math.floor(limit - level + EPSILON), reset)
end
local wait = (level + cost - limit) / leak
return rejected(whole_ms(wait), math.floor(math.max(limit - level, 0) + EPSILON), level / leak)
