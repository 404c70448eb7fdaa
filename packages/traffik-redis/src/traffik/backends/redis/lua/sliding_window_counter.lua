-- SlidingWindowCounter.transition. State: {window_id, current, previous}.
-- numbers(), the first 3: limit, window_ms, cost.
local limit, window, cost = numbers()
local now = now_ms()
local wid = floordiv(now, window)
local into = now - wid * window
local current, previous = 0.0, 0.0
local state = load_state()
if state ~= nil and #state == 3 then
  if state[1] == wid then
    current, previous = state[2], state[3]
  elseif state[1] == wid - 1 then
    previous = state[2]
  end
end
local left = window - into
local weighted = previous * left / window + current
if weighted + cost <= limit + EPSILON then
  current = current + cost
  local used = weighted + cost
  save_state({wid, current, previous}, left + window)
  return allowed(math.floor(limit - used + EPSILON), left + window)
end
local wait = -1.0
if current + cost <= limit + EPSILON and previous > 0 then
  local decay = (weighted + cost - limit) * window / previous
  if decay <= left + EPSILON then
    wait = decay
  end
end
if wait < 0 then
  -- In the next window this window's count becomes the weighted "previous".
  local start = 0.0
  if current > 0 then
    start = window * (1 - (limit - cost) / current)
  end
  wait = left + math.max(start, 0.0)
end
local reset = 0.0
if current > 0 then
  reset = left + window
elseif previous > 0 then
  reset = left
end
return rejected(whole_ms(wait), math.floor(math.max(limit - weighted, 0) + EPSILON), reset)
