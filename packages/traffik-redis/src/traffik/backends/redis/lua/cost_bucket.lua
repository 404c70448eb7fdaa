-- CostBasedTokenBucket (traffik.strategies.cost_bucket). State: {tokens, last_ms, cost1, ...},
-- tokens scaled by the period and the thousandths. Parameters after limit, period and cost: the
-- bucket size, and cost_window * 1024 + the least multiplier (in thousandths).
local cost_based_token_bucket = {}
local THOUSANDTHS = 1000

-- CostBasedTokenBucket._refill: scaled tokens refilled per ms.
local function cost_refill(history, limit, least)
  local n, total = #history, 0
  for i = 1, n do
    total = total + history[i]
  end
  if n == 0 or total <= 0 then
    return limit * THOUSANDTHS
  end
  return limit * min(max(least, floordiv(THOUSANDTHS * n, total)), THOUSANDTHS)
end

-- CostBasedTokenBucket._current: the tokens at `now` and the cost history (none when full).
local function cost_current(state, now, limit, full, window, least)
  if state == nil or #state < 2 then
    return full, {}
  end
  local tokens, elapsed, history = state[1], max(now - state[2], 0), {}
  for i = max(3, #state - window + 1), #state do
    history[#history + 1] = state[i]
  end
  local refill = cost_refill(history, limit, least)
  if elapsed >= ceildiv(full - tokens, refill) then
    return full, {}
  end
  return tokens + elapsed * refill, history
end

local function cost_state(tokens, now, history)
  local state = {tokens, now}
  for i = 1, #history do
    state[i + 2] = history[i]
  end
  return state
end

function cost_based_token_bucket.transition(state, now, limit, period, cost, bucket, packed)
  if cost > bucket then
    return false, period, 0, period
  end
  local window = floordiv(packed, 1024)
  local least = packed - window * 1024
  local unit = period * THOUSANDTHS
  local full = bucket * unit
  local tokens, history = cost_current(state, now, limit, full, window, least)
  local need = cost * unit
  if tokens >= need then
    tokens = tokens - need
    history[#history + 1] = cost
    if #history > window then
      table.remove(history, 1)
    end
    local full_in = ceildiv(full - tokens, cost_refill(history, limit, least))
    local kept = max(full_in, 1)
    return true, 0, floordiv(tokens, unit), full_in, cost_state(tokens, now, history), kept
  end
  local refill = cost_refill(history, limit, least)
  local remaining = max(floordiv(tokens, unit), 0)
  return false, ceildiv(need - tokens, refill), remaining, ceildiv(full - tokens, refill)
end

if REFUND then
  function cost_based_token_bucket.refund(state, now, limit, period, cost, bucket, packed)
    local window = floordiv(packed, 1024)
    local least = packed - window * 1024
    local unit = period * THOUSANDTHS
    local full = bucket * unit
    local tokens, history = cost_current(state, now, limit, full, window, least)
    tokens = min(full, tokens + cost * unit)
    local back, n = cost, #history
    while n > 0 and back ~= 0 do -- the newest costs leave the history first
      local taken = min(history[n], back)
      history[n] = history[n] - taken
      back = back - taken
      if history[n] == 0 then
        history[n] = nil
        n = n - 1
      end
    end
    local kept = max(ceildiv(full - tokens, cost_refill(history, limit, least)), 1)
    return cost_state(tokens, now, history), kept
  end
end
