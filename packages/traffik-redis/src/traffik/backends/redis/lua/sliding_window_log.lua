-- SlidingWindowLog.transition. State: {t1, cost1, t2, cost2, ...}, oldest first.
-- numbers(), the first 3: limit, window_ms, cost.
local limit, window, cost = numbers()
local now = now_ms()
local start = now - window
local log = {}
local total = 0.0
local state = load_state()
if state ~= nil then
  for i = 1, #state - 1, 2 do
    if state[i] > start then
      log[#log + 1] = state[i]
      log[#log + 1] = state[i + 1]
      total = total + state[i + 1]
    end
  end
end
if total + cost <= limit + EPSILON then
  local n = #log
  if n > 0 and log[n - 1] == now then
    log[n] = log[n] + cost
  else
    log[n + 1] = now
    log[n + 2] = cost
  end
  local used = total + cost
  save_state(log, window)
  return allowed(math.floor(limit - used + EPSILON), window)
end
local excess = total + cost - limit
local freed = 0.0
local wait = window
for i = 1, #log, 2 do
  freed = freed + log[i + 1]
  if freed >= excess - EPSILON then
    wait = log[i] + window - now
    break
  end
end
local reset = 0.0
if #log > 0 then
  reset = log[#log - 1] + window - now
end
return rejected(whole_ms(wait), math.floor(math.max(limit - total, 0) + EPSILON), reset)
