-- LeakyBucket.transition. State: {level, last_ms}, the level scaled by the period.
-- numbers(), the first 3: limit, period_ms, cost.
local limit, period, cost = numbers()
local now = now_ms()
local level = 0
local state = load_state()
if state ~= nil and #state == 2 then
  level = state[1]
  local elapsed = math.max(now - state[2], 0)
  if elapsed >= ceildiv(level, limit) then
    level = 0
  else
    level = level - elapsed * limit
  end
end
local admitted, reply, reset = admit(level, limit, period, cost)
if admitted then
  save_state({level + cost * period, now}, math.max(reset, 1))
end
return reply
