-- CostBasedTokenBucket (traffik.strategies.cost_bucket). State: 'h' then {tokens, last_ms,
-- cost1, count1, cost2, count2, ...}, tokens scaled by the period and the thousandths, then
-- the cost history (oldest first) as runs of equal costs, each count at least 1: steady costs
-- keep the state, and the work on it, a few numbers long however long the cost window (its
-- helpers: _runs.lua). The states of the scripts before ('i': {tokens, last_ms, cost1, cost2,
-- ...}) are read as well. Either may end with the rate it was written under, {limit,
-- -period_ms} (a count and a cost are never negative); one without it is read as written under
-- the current rate. x: the bucket size (0: the limit), y: cost_window * 1024 + the least
-- multiplier (in thousandths).
local window = floordiv(y, 1024)
local least = y - window * 1024
local unit = period * 1000
local size = x == 0 and limit or x
local full, need = size * unit, cost * unit
local runs, valid = load_state(raw, 104), true -- 'h'
local plain = runs == nil and load_state(raw, 105) -- 'i'
-- The rate the state was written under (its last two numbers, the period negative), taken off.
local was_limit, was_period = limit, period
local tagged = runs or plain
if tagged and #tagged >= 2 and tagged[2] > now + 60000 then -- from further ahead: no state (base.dated)
  runs, plain, tagged = nil, nil, nil
elseif tagged and #tagged >= 2 and tagged[2] > now then -- a later last_ms: decided at it (decide.lua)
  now = tagged[2]
end
if tagged and #tagged >= 4 and tagged[#tagged] < 0 then
  local len = #tagged
  was_limit, was_period = tagged[len - 1], -tagged[len]
  tagged[len], tagged[len - 1] = nil, nil
end
-- Read under another rate: refilled under it (w_: its numbers), then the units the bucket
-- missed (rounded up, at most this bucket) missing from this rate's bucket; no rate it can
-- decide exactly: no state.
local rescale = was_limit ~= limit or was_period ~= period
local w_limit, w_unit, w_full = limit, unit, full
if rescale then
  local old = x == 0 and was_limit or x
  w_limit, w_unit = was_limit, was_period * 1000
  w_full = old * w_unit
  if was_limit < 1 or 2 * w_full >= 2 ^ 53 then
    runs, plain = nil, nil
  end
end
if runs ~= nil then
  valid = #runs >= 2 and #runs % 2 == 0
  for i = 4, #runs, 2 do
    valid = valid and runs[i] >= 1
  end
  if not valid then
    runs = nil
  end
else
  if plain and #plain >= 2 then
    runs = {plain[1], plain[2]}
    for i = 3, #plain do
      push_cost(runs, plain[i])
    end
  end
end
if valid or not REFUND then -- a refund has nothing to give back to runs that are not ours
  -- CostBasedTokenBucket._current: the tokens at `now` and the last `window` costs (none when
  -- the bucket is full), n of them totalling `total`.
  local tokens, n, total = full, 0, 0
  if runs == nil then
    runs = {full, now}
  else
    for i = 4, #runs, 2 do
      n = n + runs[i]
    end
    local drop = n - window
    while drop > 0 do -- the oldest leave
      if runs[4] <= drop then
        drop = drop - runs[4]
        table.remove(runs, 3)
        table.remove(runs, 3)
      else
        runs[4] = runs[4] - drop
        drop = 0
      end
    end
    n = n < window and n or window
    for i = 3, #runs, 2 do
      total = total + runs[i] * runs[i + 1]
    end
    local elapsed, refill = now - runs[2], cost_refill(n, total, w_limit, least)
    if elapsed < 0 then
      elapsed = 0
    end
    local held = 0
    if elapsed < ceildiv(w_full - runs[1], refill) then
      tokens = runs[1] + elapsed * refill
      held = 1
      if rescale then
        held = math.min(ceildiv(w_full - tokens, w_unit), size)
        tokens = (size - held) * unit
      end
    end
    if held == 0 then
      for i = #runs, 3, -1 do
        runs[i] = nil
      end
      n, total = 0, 0
    end
  end
  if REFUND then
    tokens = math.min(full, tokens + need)
    local back = cost
    while n > 0 and back ~= 0 do -- the newest costs leave the history first
      local len = #runs
      local c = runs[len - 1]
      local taken = math.min(c, back)
      back = back - taken
      n, total = n - 1, total - c
      if runs[len] == 1 then
        runs[len - 1], runs[len] = nil, nil
      else
        runs[len] = runs[len] - 1
      end
      if c ~= taken then -- what is left of it stays the newest
        push_cost(runs, c - taken)
        n, total = n + 1, total + c - taken
      end
    end
    runs[1], runs[2] = tokens, now
    ttl = ceildiv(full - tokens, cost_refill(n, total, limit, least))
    local len = #runs
    runs[len + 1], runs[len + 2] = limit, -period
    state = pack_state(runs, 104)
  elseif cost <= size and tokens >= need then
    tokens = tokens - need
    push_cost(runs, cost)
    n, total = n + 1, total + cost
    if n > window then -- the oldest leaves
      n, total = n - 1, total - runs[3]
      if runs[4] == 1 then
        table.remove(runs, 3)
        table.remove(runs, 3)
      else
        runs[4] = runs[4] - 1
      end
    end
    reset = ceildiv(full - tokens, cost_refill(n, total, limit, least))
    admitted, wait, remaining = true, 0, floordiv(tokens, unit)
    runs[1], runs[2] = tokens, now
    local len = #runs
    runs[len + 1], runs[len + 2] = limit, -period
    state, ttl = pack_state(runs, 104), reset
  elseif cost > size then
    admitted, wait, remaining, reset = false, period, 0, period
  else
    local refill = cost_refill(n, total, limit, least)
    admitted, wait = false, ceildiv(need - tokens, refill)
    remaining = math.max(floordiv(tokens, unit), 0)
    reset = ceildiv(full - tokens, refill)
  end
end
