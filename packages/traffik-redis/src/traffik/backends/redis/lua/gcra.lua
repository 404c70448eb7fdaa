-- GCRA (traffik.strategies.gcra), time counted in 1/limit ms (an emission interval is `period`
-- units). State: {tat_ms, tat_rest, limit, period_ms} ('<cdddd'), the theoretical arrival time
-- tat_ms + tat_rest / limit, then the rate it was written under; {tat_ms, tat_rest} ('<cdd',
-- written before the rate was kept) is read as written under the current rate. x: the burst
-- tolerance in 1/limit ms; y: the tolerance in ms given (-1: none, the default). A reset is when the budget is whole again: the backlog down to
-- `slack`, the part of the span short of a whole interval (GCRA._slack), where no unit fits;
-- the state lives until the arrival time.
local span = x + period
local slack = span - floordiv(span, period) * period
-- GCRA._backlog: the theoretical arrival time minus now, in 1/limit ms (0 once it has passed).
local tat_ms, tat_rest, was_limit, was_period = numbers(raw, '<cdddd')
if tat_ms == nil then
  tat_ms, tat_rest = numbers(raw, '<cdd')
  was_limit, was_period = limit, period
end
-- An arrival time further ahead than a hit could put it (the period it was written under and
-- the tolerance, GCRA._reach) by more than 60000 ms: no state (base.dated).
if tat_ms ~= nil and tat_ms - now > was_period + -floordiv(-x, limit) + 60000 then
  tat_ms = nil
end
local backlog = 0
if tat_ms ~= nil and (tat_ms > now or (tat_ms == now and tat_rest > 0)) then
  backlog = (tat_ms - now) * was_limit + tat_rest
end
-- behind: the backlog of a state of another rate, in its 1/limit ms (nil: none).
local behind = nil
if tat_ms ~= nil and (was_limit ~= limit or was_period ~= period) then
  -- Written under another rate: the backlog in whole units (intervals of that rate, rounded
  -- up), as as many intervals of this one (at most its capacity); no rate: no backlog.
  if was_limit >= 1 and was_period >= 1 and 2 * was_limit * was_period < 2 ^ 53 then
    behind = backlog
    backlog = math.min(-floordiv(-backlog, was_period), floordiv(span, period)) * period
  else
    backlog = 0
  end
end
local after = backlog + cost * period
if REFUND then
  after = math.max(backlog - cost * period, 0)
elseif cost * period > span then -- more than the strategy's capacity: never admitted
  admitted, wait, remaining, reset = false, period, 0, period
elseif after > span then
  admitted, wait = false, -floordiv(-(after - span), limit)
  remaining = math.max(floordiv(span - backlog, period), 0)
  reset = -floordiv(-(backlog - slack), limit)
  if behind == nil then -- (this rate's state: nothing written)
  else
    -- The span of the old rate (GCRA._span, its tolerance as GCRA.tolerance makes it: the ms
    -- given times its limit, rounded half to even as Python's round), in its 1/limit ms.
    local was_span = was_limit * was_period
    if y >= 0 then
      local ms = y * was_limit
      local whole = ms - ms % 1
      if ms - whole > 0.5 or (ms - whole == 0.5 and whole % 2 == 1) then
        whole = whole + 1
      end
      was_span = whole + was_period
    end
    local most = floordiv(span, period) * was_period
    if was_span <= most and behind <= most then
      -- A state of the old rate holds no more than this one: its backlog, exactly, is
      -- stored as this rate's, and decided (_another_rate.converted).
      local held, was_unit, unit, carried = behind, was_period, period, 0
--[[ INCLUDE _rescaled ]]
      backlog = carried
      after = backlog + cost * period
      if after <= span then -- the part of a unit it holds fits the tolerance's part of one
        admitted, wait, remaining = true, 0, floordiv(span - after, period)
      else
        wait = -floordiv(-(after - span), limit)
        remaining = math.max(floordiv(span - backlog, period), 0)
        reset = -floordiv(-(math.max(backlog - slack, 0)), limit)
        tat_ms = floordiv(backlog, limit)
        state = struct.pack('<cdddd', 'i', now + tat_ms, backlog - tat_ms * limit, limit, period)
        ttl = -floordiv(-backlog, limit)
      end
    else -- it may hold more than this rate's capacity: until it holds what this one admits
      wait = -floordiv(-(behind - (floordiv(span, period) - cost) * was_period), was_limit)
      reset = -floordiv(-behind, was_limit)
    end
  end
else
  admitted, wait, remaining = true, 0, floordiv(span - after, period)
end
if admitted ~= false then -- the state for `after`: its arrival time as whole ms, and the rest
  reset = -floordiv(-(math.max(after - slack, 0)), limit)
  tat_ms = floordiv(after, limit)
  state = struct.pack('<cdddd', 'i', now + tat_ms, after - tat_ms * limit, limit, period)
  ttl = -floordiv(-after, limit)
end
