-- Sliding windows (traffik.strategies.sliding_window): SlidingWindowCounter and SlidingWindowLog.
-- A transition returns admitted, wait, remaining, reset and, when admitted, the new state and
-- its TTL in ms; a refund returns the new state and its TTL.

-- SlidingWindowCounter. State: {window_id, current, previous}; with `left` ms of the window to
-- go, the weighted count (scaled by the period) is previous * left + current * period.
local sliding_window_counter = {}

-- SlidingWindowCounter._counts: window id, ms left in it, current and previous counts at `now`.
local function window_counts(state, now, period)
  local wid = floordiv(now, period)
  local left = period - (now - wid * period)
  if state ~= nil and #state == 3 then
    if state[1] == wid then
      return wid, left, state[2], state[3]
    elseif state[1] == wid - 1 then
      return wid, left, 0, state[2]
    end
  end
  return wid, left, 0, 0
end

function sliding_window_counter.transition(state, now, limit, period, cost)
  local wid, left, current, previous = window_counts(state, now, period)
  local weighted = previous * left + current * period
  local top = limit * period
  local need = cost * period
  if weighted + need <= top then
    local remaining = floordiv(top - weighted - need, period)
    return true, 0, remaining, left + period, {wid, current + cost, previous}, left + period
  end
  local excess = weighted + need - top
  local wait
  if current + cost <= limit and previous > 0 and ceildiv(excess, previous) < left then
    -- In this window, t ms from now: previous * (left - t) + (current + cost) * period <= top.
    wait = ceildiv(excess, previous)
  elseif current > 0 then
    -- From the next window on, s ms into it: current * (period - s) + cost * period <= top.
    wait = left + max(ceildiv((current + cost - limit) * period, current), 0)
  else
    wait = left
  end
  local reset = 0
  if current > 0 then
    reset = left + period
  elseif previous > 0 then
    reset = left
  end
  return false, wait, floordiv(max(top - weighted, 0), period), reset
end

-- The current window first, then what still weighs of the previous one.
if REFUND then
  function sliding_window_counter.refund(state, now, limit, period, cost)
    local wid, left, current, previous = window_counts(state, now, period)
    local back = min(cost, current)
    return {wid, current - back, max(previous - (cost - back), 0)}, left + period
  end
end

-- SlidingWindowLog. State: {t1, cost1, t2, cost2, ...}, oldest first.
local sliding_window_log = {}

-- SlidingWindowLog._log: the entries still inside the window at `now`, and their total cost,
-- kept in the state's own table (no copy).
local function window_log(state, now, period)
  if state == nil then
    return {}, 0
  end
  local start, total, kept, len = now - period, 0, 0, #state
  for i = 1, len - 1, 2 do
    local t = state[i]
    if t > start then
      local c = state[i + 1]
      state[kept + 1], state[kept + 2] = t, c
      kept = kept + 2
      total = total + c
    end
  end
  for i = len, kept + 1, -1 do
    state[i] = nil
  end
  return state, total
end

function sliding_window_log.transition(state, now, limit, period, cost)
  local log, total = window_log(state, now, period)
  local n = #log
  if total + cost <= limit then
    if n > 0 and log[n - 1] == now then
      log[n] = log[n] + cost
    else
      log[n + 1] = now
      log[n + 2] = cost
    end
    return true, 0, limit - total - cost, period, log, period
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
  return false, wait, max(limit - total, 0), reset
end

if REFUND then
  function sliding_window_log.refund(state, now, limit, period, cost)
    local log = window_log(state, now, period)
    take_newest(log, cost)
    return log, period
  end
end
