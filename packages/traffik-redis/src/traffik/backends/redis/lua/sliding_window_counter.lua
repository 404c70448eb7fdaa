-- SlidingWindowCounter (traffik.strategies.sliding_window). State: {window_id, current,
-- previous, period_ms} ('<cdddd'); with `left` ms of the window to go, the weighted count
-- (scaled by the period) is previous * left + current * period. {window_id, current,
-- previous} ('<cddd', written before the period was kept) is counted in this period.
-- SlidingWindowCounter._counts: window id, ms left in it, current and previous counts; a
-- state counted in another period carries its weighted count, rounded up, into now's window
-- (sliding_window._carried).
local held, current, previous, was = numbers(raw, '<cdddd')
local carried = false -- a state of another period carried into now's window (stored refused)
if held == nil then
  held, current, previous = numbers(raw, '<cddd')
elseif was ~= period then -- another period: its weighted count, rounded up, is now's window's
  local into = -1
  if was >= 1 then
    local at = now
    if held * was > now and held * was <= now + 60000 then
      at = held * was
    end
    into = floordiv(at, was)
    local over = was - (at - into * was)
    if held == into then
      current = -floordiv(-(previous * over + current * was), was)
    elseif held == into - 1 then
      current = -floordiv(-(current * over), was)
    end
  end
  if was >= 1 and (held == into or held == into - 1) then
    held, previous, carried = floordiv(now, period), 0, true
  else
    held = nil
  end
end
--[[ INCLUDE _window_now ]]
if held == wid - 1 then
  current, previous = 0, current
elseif held ~= wid then
  current, previous = 0, 0
end
local weighted, top, need = previous * left + current * period, limit * period, cost * period
if REFUND then -- the current window first, then what still weighs of the previous one
  local back = math.min(cost, current)
  state = struct.pack('<cdddd', 'i', wid, current - back, math.max(previous - (cost - back), 0),
    period)
  ttl = left + period
elseif weighted + need <= top then
  admitted, wait, remaining = true, 0, floordiv(top - weighted - need, period)
  reset, ttl = left + period, left + period
  state = struct.pack('<cdddd', 'i', wid, current + cost, previous, period)
elseif cost > limit then -- more than the strategy's capacity: never admitted
  admitted, wait, remaining, reset = false, period, 0, period
else
  local excess = weighted + need - top
  admitted, wait = false, left
  if current + cost <= limit and previous > 0 and -floordiv(-excess, previous) < left then
    -- In this window, t ms from now: previous * (left - t) + (current + cost) * period <= top.
    wait = -floordiv(-excess, previous)
  elseif current > 0 then
    -- From the next window on, s ms into it: current * (period - s) + cost * period <= top.
    wait = left + math.max(-floordiv(-((current + cost - limit) * period), current), 0)
  end
  remaining = floordiv(math.max(top - weighted, 0), period)
  reset = current > 0 and left + period or previous > 0 and left or 0
  if carried then -- stored as this period's (traffik.strategies.base.Transition)
    state = struct.pack('<cdddd', 'i', wid, current, previous, period)
    ttl = left + period
  end
end
