-- GCRA (traffik.strategies.gcra), time counted in 1/limit ms (an emission interval is `period`
-- units). State: {tat_ms, tat_rest, limit, period_ms} ('<cdddd'), the theoretical arrival time
-- tat_ms + tat_rest / limit, then the rate it was written under; {tat_ms, tat_rest} ('<cdd',
-- written before the rate was kept) is read as written under the current rate. x: the burst
-- tolerance in 1/limit ms. A reset is when the budget is whole again: the backlog down to
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
  elseif behind <= floordiv(span, period) * was_period then -- converted (_another_rate.converted)
    tat_ms = floordiv(backlog, limit)
    state = struct.pack('<cdddd', 'i', now + tat_ms, backlog - tat_ms * limit, limit, period)
    ttl = -floordiv(-backlog, limit)
  else -- it held more than this rate's capacity: until the old state holds what this admits
    wait = -floordiv(-(behind - (floordiv(span, period) - cost) * was_period), was_limit)
    remaining, reset = 0, -floordiv(-behind, was_limit)
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
