-- TieredRate (traffik.strategies.tiered): a clock-aligned window. The limit it receives is the
-- tier's already (the item's rate is the effective one). State: {window_id, count}.
local tiered_rate = {}

local function tiered_count(state, wid)
  if state ~= nil and #state == 2 and state[1] == wid then
    return state[2]
  end
  return 0
end

function tiered_rate.transition(state, now, limit, period, cost)
  if cost > limit then
    return false, period, 0, period
  end
  local wid, left = aligned(now, period)
  local count = tiered_count(state, wid)
  if count + cost <= limit then
    count = count + cost
    return true, 0, limit - count, left, {wid, count}, left
  end
  local reset = 0
  if count > 0 then
    reset = left
  end
  return false, left, max(limit - count, 0), reset
end

if REFUND then
  function tiered_rate.refund(state, now, limit, period, cost)
    local wid, left = aligned(now, period)
    return {wid, max(tiered_count(state, wid) - cost, 0)}, left
  end
end
