-- LeakyBucketWithQueue.transition. State: {last_ms, t1, left1, t2, left2, ...}, each left
-- scaled by the period. numbers(), the first 3: limit, period_ms, cost.
local limit, period, cost = numbers()
local now = now_ms()
local queue = {}
local level = 0
local state = load_state()
if state ~= nil and #state % 2 == 1 then
  -- A full bucket drains in one period: longer idle times change nothing more.
  local drained = math.min(math.max(now - state[1], 0), period) * limit
  for i = 2, #state - 1, 2 do
    local left = state[i + 1]
    if drained >= left then
      drained = drained - left
    else
      queue[#queue + 1] = state[i]
      queue[#queue + 1] = left - drained
      level = level + left - drained
      drained = 0
    end
  end
end
local admitted, reply, reset = admit(level, limit, period, cost)
if admitted then
  local new_state = {now}
  for i = 1, #queue do
    new_state[i + 1] = queue[i]
  end
  new_state[#new_state + 1] = now
  new_state[#new_state + 1] = cost * period
  save_state(new_state, math.max(reset, 1))
end
return reply
