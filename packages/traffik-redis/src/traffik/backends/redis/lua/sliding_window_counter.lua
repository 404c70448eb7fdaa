-- SlidingWindowCounter.transition. State: {window_id, current, previous}; with `left` ms of
-- the window to go, the weighted count (scaled by the period) is previous * left + current * period.
-- numbers(), the first 3: limit, period_ms, cost.
local limit, period, cost = numbers()
local now = now_ms()
local wid = floordiv(now, period)
local left = period - (now - wid * period)
local current, previous = 0, 0
local state = load_state()
if state ~= nil and #state == 3 then
  if state[1] == wid then
    current, previous = state[2], state[3]
  elseif state[1] == wid - 1 then
    previous = state[2]
  end
end
local weighted = previous * left + current * period
local top = limit * period
local need = cost * period
if weighted + need <= top then
  save_state({wid, current + cost, previous}, left + period)
  return allowed(floordiv(top - weighted - need, period), left + period)
end
local excess = weighted + need - top
local wait
if current + cost <= limit and previous > 0 and ceildiv(excess, previous) < left then
  -- In this window, t ms from now: previous * (left - t) + (current + cost) * period <= top.
  wait = ceildiv(excess, previous)
elseif current > 0 then
  -- From the next window on, s ms into it: current * (period - s) + cost * period <= top.
  wait = left + math.max(ceildiv((current + cost - limit) * period, current), 0)
else
  wait = left
end
local reset = 0
if current > 0 then
  reset = left + period
elseif previous > 0 then
  reset = left
end
return rejected(wait, floordiv(math.max(top - weighted, 0), period), reset)
