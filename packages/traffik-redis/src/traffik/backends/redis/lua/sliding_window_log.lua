-- SlidingWindowLog (traffik.strategies.sliding_window). State: {t1, cost1, t2, cost2, ...},
-- oldest first.
-- SlidingWindowLog._log: the entries still inside the window and their total cost, kept in the
-- state's own table (no copy).
local log, start, total, kept = load_state(raw, 105) or {}, now - period, 0, 0 -- 'i'
local len = #log
for i = 1, len - 1, 2 do
  local t = log[i]
  if t > start then
    local c = log[i + 1]
    log[kept + 1], log[kept + 2] = t, c
    kept = kept + 2
    total = total + c
  end
end
for i = len, kept + 1, -1 do
  log[i] = nil
end
if REFUND then -- the newest entries first
  take_newest(log, cost)
  state, ttl = pack_state(log, 105), period
elseif total + cost <= limit then
  if kept > 0 and log[kept - 1] == now then
    log[kept] = log[kept] + cost
  else
    log[kept + 1], log[kept + 2] = now, cost
  end
  admitted, wait, remaining, reset = true, 0, limit - total - cost, period
  state, ttl = pack_state(log, 105), period
else
  local excess, freed = total + cost - limit, 0
  admitted, wait, remaining, reset = false, period, math.max(limit - total, 0), 0
  for i = 1, kept, 2 do
    freed = freed + log[i + 1]
    if freed >= excess then
      wait = log[i] + period - now
      break
    end
  end
  if kept > 0 then
    reset = log[kept - 1] + period - now
  end
end
