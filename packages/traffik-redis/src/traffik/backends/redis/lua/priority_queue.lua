-- PriorityQueue (traffik.strategies.priority). State: {t1, p1, c1, t2, p2, c2, ...}, oldest
-- first. x: the priority decided at, y: the most entries kept. The log is the state: every
-- decision reads and writes all of it (up to y entries).
-- PriorityQueue._log: the entries still inside the window, kept in the state's own table (no
-- copy); with what they count at this priority, and where the oldest of the lowest is.
local log = load_state(raw, 105) or {} -- 'i'
local start, kept, counted, lowest, first = now - period, 0, 0
local len = #log
for i = 1, len - 2, 3 do
  local t = log[i]
  if t > start then
    local p, c = log[i + 1], log[i + 2]
    log[kept + 1], log[kept + 2], log[kept + 3] = t, p, c
    if lowest == nil or p < lowest then
      lowest, first = p, kept + 1
    end
    if p >= x then
      counted = counted + c
    end
    kept = kept + 3
  end
end
for i = len, kept + 1, -1 do
  log[i] = nil
end
if REFUND then -- the newest entries of this priority give back first
  local back, i = cost, kept - 2
  while i >= 1 and back ~= 0 do
    if log[i + 1] == x then
      local taken = math.min(log[i + 2], back)
      log[i + 2] = log[i + 2] - taken
      back = back - taken
      if log[i + 2] == 0 then
        table.remove(log, i)
        table.remove(log, i)
        table.remove(log, i)
      end
    end
    i = i - 3
  end
  state, ttl = pack_state(log, 105), period
elseif cost > limit then
  admitted, wait, remaining, reset = false, period, 0, period
elseif counted + cost <= limit then
  if kept > 0 and log[kept - 2] == now and log[kept - 1] == x then
    log[kept] = log[kept] + cost
  else
    log[kept + 1], log[kept + 2], log[kept + 3] = now, x, cost
    if lowest == nil or x < lowest then
      lowest, first = x, kept + 1
    end
    kept = kept + 3
  end
  while kept > 3 * y do -- the oldest entry of the lowest priority leaves
    if first == nil then
      for i = 1, kept, 3 do
        if lowest == nil or log[i + 1] < lowest then
          lowest, first = log[i + 1], i
        end
      end
    end
    table.remove(log, first)
    table.remove(log, first)
    table.remove(log, first)
    kept, lowest, first = kept - 3, nil, nil
  end
  admitted, wait, remaining, reset = true, 0, limit - counted - cost, period
  state, ttl = pack_state(log, 105), period
else
  local excess, freed, newest = counted + cost - limit, 0, nil
  admitted, wait, remaining, reset = false, period, math.max(limit - counted, 0), 0
  for i = 1, kept, 3 do
    if log[i + 1] >= x then
      newest = log[i]
      if freed < excess then
        freed = freed + log[i + 2]
        if freed >= excess then
          wait = log[i] + period - now
        end
      end
    end
  end
  if newest ~= nil then
    reset = newest + period - now
  end
end
