-- AdaptiveThrottle (traffik.strategies.adaptive). State: {window_id, count, effective_limit,
-- cut_from, limit, period_ms} ('<cdddddd'), cut_from the limit in force before this window's
-- cut (0: not cut), then the rate it was written under; {window_id, count, effective_limit,
-- cut_from} ('<cdddd', written before the rate was kept) is read as written under this rate.
-- x: threshold * PARTS + reduction, y: recovery * PARTS + floor ratio, each fraction in whole
-- parts of PARTS (traffik.strategies.periods, 100000). x and y are below 2^34, where Lua's
-- a % b (a - floor(a / b) * b) is exact.
local reduction, floor_ratio = x % 100000, y % 100000
local threshold, recovery = (x - reduction) / 100000, (y - floor_ratio) / 100000
-- AdaptiveThrottle._step: units recovered per window, at least one.
local step = floordiv(limit * recovery, 100000)
if step < 1 then
  step = 1
end
-- AdaptiveThrottle._window: window id, ms left, count, effective limit and cut_from at `now`
-- (periods.aligned: the id of the clock-aligned period holding `now`, and the ms until it ends).
local held, count, effective, cut_from, was, was_period = numbers(raw, '<cdddddd')
if held == nil then
  held, count, effective, cut_from = numbers(raw, '<cdddd')
end
-- A later window of this period: decided in it (decide.lua).
if held ~= nil and (was_period == nil or was_period == period) and held * period > now
  and held * period <= now + 60000
then
  now = held * period
end
local wid = floordiv(now, period)
local left = period - (now - wid * period)
if was_period ~= nil and was_period ~= period then
  -- Another period: its window, while it holds `now` (or is later and believed), is `now`'s
  -- window here, with its count; once closed, the window before (one recovery step).
  if was_period < 1 then
    held = nil
  elseif held == floordiv(now, was_period)
    or (held * was_period > now and held * was_period <= now + 60000)
  then
    held = wid
  else
    held = wid - 1
  end
end
if held ~= nil and was_period ~= nil and (was ~= limit or was_period ~= period) then
  if was < 1 or 2 * was * 100000 >= 2 ^ 53 then
    held = nil -- no rate: a fresh key
  else -- their share of the old limit, in parts
    local share = floordiv(math.min(effective, was) * 100000, was)
    effective = math.max(floordiv(limit * floor_ratio, 100000), floordiv(limit * share, 100000))
    cut_from = -floordiv(-(limit * -floordiv(-(math.min(cut_from, was) * 100000), was)), 100000)
  end
end
if held == nil or held > wid then
  count, effective, cut_from = 0, limit, 0
else
  effective = math.min(effective, limit)
  if held ~= wid then
    if effective < limit then
      local windows = math.min(wid - held, -floordiv(-(limit - effective), step))
      effective = math.min(effective + windows * step, limit)
    end
    count, cut_from = 0, 0
  end
end
if REFUND then
  count = math.max(count - cost, 0)
  -- A refund that takes the count back to the threshold or under undoes the cut.
  if cut_from > 0 and count * 100000 <= cut_from * threshold then
    effective, cut_from = math.max(effective, cut_from), 0
  end
elseif cost <= limit and count + cost <= effective then
  admitted, count = true, count + cost
  if cut_from == 0 and count * 100000 > effective * threshold then
    local floored = floordiv(limit * floor_ratio, 100000)
    cut_from = effective
    effective = math.max(floored, floordiv(effective * reduction, 100000))
  end
else
  admitted = false
end
-- AdaptiveThrottle._left: the hits of cost 1 this window still admits (`remaining`): up to
-- the effective limit, or, when not cut yet, up to the hit that cuts it, then the cut limit.
local reach = effective
if cut_from == 0 then
  local cutting = math.max(floordiv(effective * threshold, 100000) + 1, count + 1)
  if cutting <= effective then
    local cut = math.max(floordiv(limit * floor_ratio, 100000), floordiv(effective * reduction, 100000))
    reach = math.max(cutting, cut)
  end
end
-- AdaptiveThrottle._kept: ms until the state says nothing a missing key would not.
local kept = left
if effective < limit then
  kept = left + (-floordiv(-(limit - effective), step) - 1) * period
end
if admitted == false then
  if cost > limit then
    wait, remaining, reset = period, 0, period
  else
    local windows = 1
    if cost > effective then
      windows = math.max(-floordiv(-(cost - effective), step), 1)
    end
    wait, remaining = left + (windows - 1) * period, math.max(reach - count, 0)
    reset = (count > 0 or effective < limit) and kept or 0
    if was_period ~= nil and (was ~= limit or was_period ~= period) then
      -- another rate's state, stored as this rate's (traffik.strategies.base.Transition)
      state = struct.pack('<cdddddd', 'i', wid, count, effective, cut_from, limit, period)
      ttl = kept
    end
  end
else
  state = struct.pack('<cdddddd', 'i', wid, count, effective, cut_from, limit, period)
  ttl = kept
  if admitted then
    wait, remaining, reset = 0, math.max(reach - count, 0), kept
  end
end
