-- AdaptiveThrottle (traffik.strategies.adaptive). State: {window_id, count, effective_limit,
-- reduced}. Parameters after limit, period and cost: threshold * PARTS + reduction, and
-- recovery * PARTS + floor ratio, each fraction in whole parts of PARTS.
local adaptive_throttle = {}

local function adaptive_params(x, y)
  local threshold, recovery = floordiv(x, PARTS), floordiv(y, PARTS)
  return threshold, x - threshold * PARTS, recovery, y - recovery * PARTS
end

-- AdaptiveThrottle._step: units recovered per window, at least one.
local function adaptive_step(limit, recovery)
  return max(floordiv(limit * recovery, PARTS), 1)
end

-- AdaptiveThrottle._window: window id, ms left, count, effective limit and reduced at `now`.
local function adaptive_window(state, now, limit, period, recovery)
  local wid, left = aligned(now, period)
  if state == nil or #state ~= 4 or state[1] > wid then
    return wid, left, 0, limit, 0
  end
  if state[1] == wid then
    return wid, left, state[2], state[3], state[4]
  end
  local effective = state[3]
  if effective < limit then
    local step = adaptive_step(limit, recovery)
    local windows = min(wid - state[1], ceildiv(limit - effective, step))
    effective = min(effective + windows * step, limit)
  end
  return wid, left, 0, min(effective, limit), 0
end

-- AdaptiveThrottle._kept: ms until the state says nothing a missing key would not.
local function adaptive_kept(left, effective, limit, period, recovery)
  if effective >= limit then
    return left
  end
  return left + (ceildiv(limit - effective, adaptive_step(limit, recovery)) - 1) * period
end

function adaptive_throttle.transition(state, now, limit, period, cost, x, y)
  if cost > limit then
    return false, period, 0, period
  end
  local threshold, reduction, recovery, floor_ratio = adaptive_params(x, y)
  local wid, left, count, effective, reduced = adaptive_window(state, now, limit, period, recovery)
  local after = count + cost
  if after <= effective then
    if reduced == 0 and after * PARTS > effective * threshold then
      effective = max(floordiv(limit * floor_ratio, PARTS), floordiv(effective * reduction, PARTS))
      reduced = 1
    end
    local kept = adaptive_kept(left, effective, limit, period, recovery)
    return true, 0, max(effective - after, 0), kept, {wid, after, effective, reduced}, kept
  end
  local windows = 1
  if cost > effective then
    windows = max(ceildiv(cost - effective, adaptive_step(limit, recovery)), 1)
  end
  local reset = 0
  if count > 0 or effective < limit then
    reset = adaptive_kept(left, effective, limit, period, recovery)
  end
  return false, left + (windows - 1) * period, max(effective - count, 0), reset
end

if REFUND then
  function adaptive_throttle.refund(state, now, limit, period, cost, x, y)
    local _, _, recovery = adaptive_params(x, y)
    local wid, left, count, effective, reduced = adaptive_window(state, now, limit, period, recovery)
    local kept = adaptive_kept(left, effective, limit, period, recovery)
    return {wid, max(count - cost, 0), effective, reduced}, kept
  end
end
