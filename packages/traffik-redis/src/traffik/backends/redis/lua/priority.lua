-- PriorityQueue (traffik.strategies.priority). State: {t1, p1, c1, t2, p2, c2, ...}, oldest
-- first. Parameters after limit, period and cost: the priority decided at, the most entries kept.
local priority_queue = {}

-- PriorityQueue._log: the entries still inside the window at `now`.
local function priority_log(state, now, period)
  local start, log = now - period, {}
  if state ~= nil then
    for i = 1, #state - 2, 3 do
      if state[i] > start then
        log[#log + 1] = state[i]
        log[#log + 1] = state[i + 1]
        log[#log + 1] = state[i + 2]
      end
    end
  end
  return log
end

local function remove_entry(log, i)
  table.remove(log, i)
  table.remove(log, i)
  table.remove(log, i)
end

function priority_queue.transition(state, now, limit, period, cost, mine, most)
  if cost > limit then
    return false, period, 0, period
  end
  local log = priority_log(state, now, period)
  local n, counted = #log, 0
  for i = 1, n, 3 do
    if log[i + 1] >= mine then
      counted = counted + log[i + 2]
    end
  end
  if counted + cost <= limit then
    if n > 0 and log[n - 2] == now and log[n - 1] == mine then
      log[n] = log[n] + cost
    else
      log[n + 1], log[n + 2], log[n + 3] = now, mine, cost
    end
    while #log > 3 * most do -- the oldest entry of the lowest priority leaves
      local lowest, first = nil, nil
      for i = 1, #log, 3 do
        if lowest == nil or log[i + 1] < lowest then
          lowest, first = log[i + 1], i
        end
      end
      remove_entry(log, first)
    end
    return true, 0, limit - counted - cost, period, log, period
  end
  local excess, freed, wait, newest = counted + cost - limit, 0, period, nil
  for i = 1, n, 3 do
    if log[i + 1] >= mine then
      newest = log[i]
      if freed < excess then
        freed = freed + log[i + 2]
        if freed >= excess then
          wait = log[i] + period - now
        end
      end
    end
  end
  local reset = 0
  if newest ~= nil then
    reset = newest + period - now
  end
  return false, wait, max(limit - counted, 0), reset
end

-- The newest entries of this priority give back first.
if REFUND then
  function priority_queue.refund(state, now, limit, period, cost, mine)
    local log = priority_log(state, now, period)
    local back, i = cost, #log - 2
    while i >= 1 and back ~= 0 do
      if log[i + 1] == mine then
        local taken = min(log[i + 2], back)
        log[i + 2] = log[i + 2] - taken
        back = back - taken
        if log[i + 2] == 0 then
          remove_entry(log, i)
        end
      end
      i = i - 3
    end
    return log, period
  end
end
