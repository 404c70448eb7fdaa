-- GCRA (traffik.strategies.gcra), time counted in 1/limit ms (an emission interval is `period`
-- units). State: {tat_ms, tat_rest}, the theoretical arrival time tat_ms + tat_rest / limit.
-- Parameter after limit, period and cost: the burst tolerance in 1/limit ms.
local gcra = {}

-- GCRA._backlog: the theoretical arrival time minus now, in 1/limit ms (0 once it has passed).
local function gcra_backlog(state, now, limit)
  if state ~= nil and #state == 2 and (state[1] > now or (state[1] == now and state[2] > 0)) then
    return (state[1] - now) * limit + state[2]
  end
  return 0
end

-- The state for a backlog: the theoretical arrival time as whole ms and the rest.
local function gcra_state(backlog, now, limit)
  local tat_ms = floordiv(backlog, limit)
  return {now + tat_ms, backlog - tat_ms * limit}
end

function gcra.transition(state, now, limit, interval, cost, tolerance)
  local span = tolerance + interval
  local backlog = gcra_backlog(state, now, limit)
  local after = backlog + cost * interval
  if after <= span then
    local reset = ceildiv(after, limit)
    local remaining = floordiv(span - after, interval)
    return true, 0, remaining, reset, gcra_state(after, now, limit), max(reset, 1)
  end
  local remaining = max(floordiv(span - backlog, interval), 0)
  return false, ceildiv(after - span, limit), remaining, ceildiv(backlog, limit)
end

if REFUND then
  function gcra.refund(state, now, limit, interval, cost)
    local backlog = max(gcra_backlog(state, now, limit) - cost * interval, 0)
    return gcra_state(backlog, now, limit), max(ceildiv(backlog, limit), 1)
  end
end
