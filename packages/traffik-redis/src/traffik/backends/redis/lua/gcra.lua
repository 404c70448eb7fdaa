-- GCRA.transition. State: {tat_ms}, the theoretical arrival time.
-- numbers(), the first 4: limit, period_ms, cost, burst tolerance in ms.
local limit, period, cost, tolerance = numbers()
local now = now_ms()
local interval = period / limit
local span = tolerance + interval
local tat = now
local state = load_state()
if state ~= nil and #state == 1 and state[1] > now then
  tat = state[1]
end
local new_tat = tat + cost * interval
if new_tat - now <= span + EPSILON then
  local backlog = new_tat - now
  save_state({new_tat}, math.max(backlog, 1.0))
  return allowed(math.floor((span - backlog) / interval + EPSILON), backlog)
end
local backlog = tat - now
local remaining = math.max(math.floor((span - backlog) / interval + EPSILON), 0)
return rejected(whole_ms(new_tat - span - now), remaining, backlog)
