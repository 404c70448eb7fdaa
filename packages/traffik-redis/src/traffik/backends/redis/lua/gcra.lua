-- GCRA.transition, time counted in 1/limit ms (an emission interval is `period` units).
-- State: {tat_ms, tat_rest}, the theoretical arrival time tat_ms + tat_rest / limit.
-- numbers(), the first 4: limit, period_ms, cost, burst tolerance in 1/limit ms.
local limit, interval, cost, tolerance = numbers()
local now = now_ms()
local span = tolerance + interval
local backlog = 0 -- the theoretical arrival time minus now, in 1/limit ms
local state = load_state()
if state ~= nil and #state == 2 and (state[1] > now or (state[1] == now and state[2] > 0)) then
  backlog = (state[1] - now) * limit + state[2]
end
local after = backlog + cost * interval
if after <= span then
  local reset = ceildiv(after, limit)
  local tat_ms = floordiv(after, limit)
  save_state({now + tat_ms, after - tat_ms * limit}, math.max(reset, 1))
  return allowed(floordiv(span - after, interval), reset)
end
return rejected(
  ceildiv(after - span, limit),
  math.max(floordiv(span - backlog, interval), 0),
  ceildiv(backlog, limit)
)
