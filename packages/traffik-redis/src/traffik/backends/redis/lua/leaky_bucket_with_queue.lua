-- LeakyBucketWithQueue.transition. State: {last_ms, t1, cost1, t2, cost2, ...}.
-- numbers(), the first 3: limit, period_ms, cost.
local limit, period, cost = numbers()
local now = now_ms()
local queue = {}
local state = load_state()
if state ~= nil and #state % 2 == 1 then
  local drained = math.max(now - state[1], 0.0) * limit / period
  for i = 2, #state - 1, 2 do
    local entry = state[i + 1]
    if drained >= entry - EPSILON then
      drained = drained - entry
    else
      queue[#queue + 1] = state[i]
      queue[#queue + 1] = entry - drained
      drained = 0.0
    end
  end
end
local level = 0
for i = 2, #queue, 2 do
  level = level + queue[i]
end
local leak = limit / period
if level + cost <= limit + EPSILON then
  level = level + cost
  local reset = level / leak
  local new_state = {now}
  for i = 1, #queue do
    new_state[i + 1] = queue[i]
  end
  new_state[#new_state + 1] = now
  new_state[#new_state + 1] = cost
  save_state(new_state, math.max(reset, 1.0))
  return allowed(math.floor(limit - level + EPSILON), reset)
end
local wait = (level + cost - limit) / leak
return rejected(whole_ms(wait), math.floor(math.max(limit - level, 0) + EPSILON), level / leak)
