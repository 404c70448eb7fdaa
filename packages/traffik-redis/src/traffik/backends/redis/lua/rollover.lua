-- QuotaWithRollover (traffik.strategies.rollover). State: {period_id, usage, rollover}.
-- Parameters after limit, period and cost: the percentage in parts of PARTS, the most rolled over.
local quota_with_rollover = {}

-- QuotaWithRollover._period: period id, ms left, usage and rollover at `now`.
local function rollover_period(state, now, limit, period, percent, most)
  local pid, left = aligned(now, period)
  if state ~= nil and #state == 3 then
    if state[1] == pid then
      return pid, left, state[2], state[3]
    elseif state[1] == pid - 1 then
      local unused = min(max(limit - state[2], 0), limit)
      return pid, left, 0, min(most, floordiv(unused * percent, PARTS))
    end
  end
  return pid, left, 0, 0
end

function quota_with_rollover.transition(state, now, limit, period, cost, percent, most)
  if cost > limit then
    return false, period, 0, period
  end
  local pid, left, usage, rollover = rollover_period(state, now, limit, period, percent, most)
  local quota = limit + rollover
  if usage + cost <= quota then
    usage = usage + cost
    return true, 0, max(quota - usage, 0), left, {pid, usage, rollover}, left + period
  end
  local reset = 0
  if usage > 0 then
    reset = left
  end
  return false, left, max(quota - usage, 0), reset
end

if REFUND then
  function quota_with_rollover.refund(state, now, limit, period, cost, percent, most)
    local pid, left, usage, rollover = rollover_period(state, now, limit, period, percent, most)
    return {pid, max(usage - cost, 0), rollover}, left + period
  end
end
