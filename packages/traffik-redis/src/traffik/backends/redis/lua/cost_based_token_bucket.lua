-- CostBasedTokenBucket (traffik.strategies.cost_bucket). State: 'h' then {tokens, last_ms,
-- cost1, count1, cost2, count2, ...}, tokens scaled by the period and the thousandths, then
-- the cost history (oldest first) as runs of equal costs, each count at least 1: steady costs
-- keep the state, and the work on it, a few numbers long however long the cost window (its
-- helpers: cost_refill and push_cost). The states of the scripts before ('i': {tokens, last_ms, cost1, cost2,
-- ...}) are read as well. Either may end with the rate it was written under, {limit,
-- -period_ms} (a count and a cost are never negative); one without it is read as written under
-- the current rate. x: the bucket size (0: the limit), y: cost_window * 1024 + the least
-- multiplier (in thousandths).
local window = floordiv(y, 1024)
local least = y - window * 1024
local unit = period * 1000
local size = x == 0 and limit or x
local full, need = size * unit, cost * unit
-- The fast read: a decision on a state of one run or none ('h', 6 or 4 numbers) written under
-- this rate, in numbers rather than a table (most states: steady costs make one run, and a
-- hit of another cost a second); the general read below takes any other state, and every
-- refund, and decides the same way.
local fast, bytes = false, raw and #raw or 0
if not REFUND and (bytes == 49 or bytes == 33) and string.byte(raw, 1) == 104 then -- 'h'
  local tokens, last, c, k, was, minus, _
  if bytes == 49 then
    _, tokens, last, c, k, was, minus = struct.unpack('<cdddddd', raw)
  else
    _, tokens, last, was, minus = struct.unpack('<cdddd', raw)
    c, k = 0, 0
  end
  -- As load_state reads it (every number whole, below 2^53; NaN and the infinities fail the
  -- `% 1` test), a count at least 1, tagged with this rate, and not from further ahead.
  if was == limit and minus == -period and tokens % 1 + last % 1 + c % 1 + k % 1 == 0
    and tokens > -2 ^ 53 and tokens < 2 ^ 53 and last > -2 ^ 53 and last <= now + 60000
    and c > -2 ^ 53 and c < 2 ^ 53 and k < 2 ^ 53 and (k >= 1 or bytes == 33)
  then
    fast = true
    if last > now then -- a later last_ms: decided at it (decide.lua)
      now = last
    end
    if k > window then -- the oldest leave (window >= 1)
      k = window
    end
    -- The refill (cost_refill below) of one run: k costs of c, 1000 * k // (c * k) thousandths
    -- being 1000 // c (at most 1000); the full rate for none, or for costs of 0 or less.
    local elapsed, refill = now > last and now - last or 0, limit * 1000
    if k > 0 and c > 0 then
      local multiplier = floordiv(1000, c)
      refill = limit * (multiplier < least and least or multiplier)
    end
    if elapsed < -floordiv(-(full - tokens), refill) then
      tokens = tokens + elapsed * refill
    else -- full again: the history is forgotten (and a hit admitted, unless above the size)
      tokens, k = full, 0
    end
    local n, total = k, c * k
    if cost <= size and tokens >= need then
      tokens = tokens - need
      local c2, k2 = 0, 0 -- a second run, the newest, when the cost differs
      if k > 0 and c == cost then
        k = k + 1
      elseif k > 0 then
        c2, k2 = cost, 1
      else
        c, k = cost, 1
      end
      n, total = n + 1, total + cost
      if n > window then -- the oldest leaves
        n, total = n - 1, total - c
        if k == 1 then
          c, k, k2 = c2, k2, 0
        else
          k = k - 1
        end
      end
      -- cost_refill for the n >= 1 costs now held
      local multiplier = total > 0 and floordiv(1000 * n, total) or 1000
      multiplier = multiplier < least and least or multiplier > 1000 and 1000 or multiplier
      reset = -floordiv(-(full - tokens), limit * multiplier)
      admitted, wait, remaining, ttl = true, 0, floordiv(tokens, unit), reset
      if k2 > 0 then
        state = struct.pack('<cdddddddd', 'h', tokens, now, c, k, c2, k2, limit, -period)
      else
        state = struct.pack('<cdddddd', 'h', tokens, now, c, k, limit, -period)
      end
    elseif cost > size then
      admitted, wait, remaining, reset = false, period, 0, period
    else
      admitted, wait = false, -floordiv(-(need - tokens), refill)
      remaining = math.max(floordiv(tokens, unit), 0)
      reset = -floordiv(-(full - tokens), refill)
    end
  end
end
if not fast then
--[[ INCLUDE _list_io ]]
  -- CostBasedTokenBucket._refill: scaled tokens refilled per ms, for a history of n costs
  -- totalling `total`. It and push_cost are defined here: the fast read has no use for
  -- them.
  local function cost_refill(n, total, limit, least)
    if n == 0 or total <= 0 then
      return limit * 1000
    end
    local multiplier = floordiv(1000 * n, total) -- within least and 1000
    return limit * (multiplier < least and least or multiplier > 1000 and 1000 or multiplier)
  end

  -- Appends `c` to the runs of `state`.
  local function push_cost(state, c)
    local len = #state
    if len > 2 and state[len - 1] == c then
      state[len] = state[len] + 1
    else
      state[len + 1], state[len + 2] = c, 1
    end
  end
  local runs, valid = load_state(raw, 104), true -- 'h'
  local plain = runs == nil and load_state(raw, 105) -- 'i'
  -- The rate the state was written under (its last two numbers, the period negative), taken off.
  local was_limit, was_period = limit, period
  local tagged = runs or plain
  if tagged and #tagged >= 2 and tagged[2] > now + 60000 then -- further ahead: no state (base.dated)
    runs, plain, tagged = nil, nil, nil
  elseif tagged and #tagged >= 2 and tagged[2] > now then -- a later last_ms: decided at it
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
  -- missed: what a state of another rate misses at now (in its units, w_unit), refilling
  -- w_refill per ms (nil: none).
  -- old: the size of a bucket of that rate.
  local missed, w_refill, old = nil, 0, 0
  if rescale then
    old = x == 0 and was_limit or x
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
      if rescale then
        missed, w_refill = 0, refill
      end
      if elapsed < -floordiv(-(w_full - runs[1]), refill) then
        tokens = runs[1] + elapsed * refill
        held = 1
        if rescale then
          missed = w_full - tokens
          held = math.min(-floordiv(-missed, w_unit), size)
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
      ttl = -floordiv(-(full - tokens), cost_refill(n, total, limit, least))
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
      reset = -floordiv(-(full - tokens), cost_refill(n, total, limit, least))
      admitted, wait, remaining = true, 0, floordiv(tokens, unit)
      runs[1], runs[2] = tokens, now
      local len = #runs
      runs[len + 1], runs[len + 2] = limit, -period
      state, ttl = pack_state(runs, 104), reset
    elseif cost > size then
      admitted, wait, remaining, reset = false, period, 0, period
    else
      local refill = cost_refill(n, total, limit, least)
      admitted, wait = false, -floordiv(-(need - tokens), refill)
      remaining = math.max(floordiv(tokens, unit), 0)
      reset = -floordiv(-(full - tokens), refill)
      if missed == nil then -- (this rate's state: nothing written)
      elseif old <= size and missed <= size * w_unit then
        -- A bucket of the old rate holds no more than this one: what it misses, exactly, is
        -- stored as this rate's, and decided (_another_rate.converted).
        local held, was_unit, carried = missed, w_unit, 0
--[[ INCLUDE _rescaled ]]
        tokens = full - carried
        wait = -floordiv(-(need - tokens), refill)
        remaining = math.max(floordiv(tokens, unit), 0)
        reset = -floordiv(-(full - tokens), refill)
        runs[1], runs[2] = tokens, now
        local len = #runs
        runs[len + 1], runs[len + 2] = limit, -period
        state, ttl = pack_state(runs, 104), reset
      else -- it may hold more than this bucket: until the old state holds what this one admits
        wait = -floordiv(-(missed - (size - cost) * w_unit), w_refill)
        reset = -floordiv(-missed, w_refill)
      end
    end
  end
end
