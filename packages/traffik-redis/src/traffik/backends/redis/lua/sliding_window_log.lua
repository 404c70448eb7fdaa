-- SlidingWindowLog.transition. State: {t1, cost1, t2, cost2, ...}, oldest first.
-- numbers(), the first 3: limit, period_ms, cost.
local limit, period, cost = numbers()
local now = now_ms()
local start = now - period
local log = {}
local total = 0
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
local n = #log
if total + cost <= limit then
  if n > 0 and log[n - 1] == now then
    log[n] = log[n] + cost
  else
    log[n + 1] = now
    log[n + 2] = cost
  end
  save_state(log, period)
  return allowed(limit - total - cost, period)
end
local excess = total + cost - limit
local freed = 0
local wait = period
for i = 1, n, 2 do
  freed = freed + log[i + 1]
  if freed >= excess then
    wait = log[i] + period - now
    break
  end
end
local reset = 0
if n > 0 then
  reset = log[n - 1] + period - now
end
return rejected(wait, math.max(limit - total, 0), reset)
