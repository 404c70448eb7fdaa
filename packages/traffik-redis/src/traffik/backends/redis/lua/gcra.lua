-- GCRA (traffik.strategies.gcra), time counted in 1/limit ms (an emission interval is `period`
-- units). State: {tat_ms, tat_rest} ('<cdd'), the theoretical arrival time tat_ms + tat_rest /
-- limit. x: the burst tolerance in 1/limit ms.
local span = x + period
-- GCRA._backlog: the theoretical arrival time minus now, in 1/limit ms (0 once it has passed).
local tat_ms, tat_rest = numbers(raw, '<cdd')
local backlog = 0
if tat_ms ~= nil and (tat_ms > now or (tat_ms == now and tat_rest > 0)) then
  backlog = (tat_ms - now) * limit + tat_rest
end
local after = backlog + cost * period
if REFUND then
  after = math.max(backlog - cost * period, 0)
elseif cost * period > span then -- more than the strategy's capacity: never admitted
  admitted, wait, remaining, reset = false, period, 0, period
elseif after > span then
  admitted, wait = false, ceildiv(after - span, limit)
  remaining = math.max(floordiv(span - backlog, period), 0)
  reset = ceildiv(backlog, limit)
else
  admitted, wait, remaining = true, 0, floordiv(span - after, period)
end
if admitted ~= false then -- the state for `after`: its arrival time as whole ms, and the rest
  reset = ceildiv(after, limit)
  tat_ms = floordiv(after, limit)
  state, ttl = struct.pack('<cdd', 'i', now + tat_ms, after - tat_ms * limit), reset
end
