-- TieredRate (traffik.strategies.tiered): a clock-aligned window. The limit it receives is the
-- tier's already (the item's rate is the effective one). State: {window_id, count,
-- period_ms} ('<cddd'); {window_id, count} ('<cdd', written before the period was kept) is
-- counted in this period; one of another period carries its count into now's window while
-- its own window is open (periods.of_period).
-- periods.aligned: the id of the clock-aligned period holding `now`, and the ms until it ends.
local held, count, was = numbers(raw, '<cddd')
if held == nil then
  held, count = numbers(raw, '<cdd')
elseif was ~= period then -- another period: its window, while it holds `now`, is now's here
  if was >= 1 and (held == floordiv(now, was) or (held * was > now and held * was <= now + 60000)) then
    held = floordiv(now, period)
  else
    held = nil
  end
end
if held ~= nil and held * period > now and held * period <= now + 60000 then -- a later window: decided in it (decide.lua)
  now = held * period
end
local wid = floordiv(now, period)
local left = period - (now - wid * period)
if held ~= wid then
  count = 0
end
if REFUND then
  state, ttl = struct.pack('<cddd', 'i', wid, math.max(count - cost, 0), period), left
elseif cost > limit then
  admitted, wait, remaining, reset = false, period, 0, period
elseif count + cost <= limit then
  count = count + cost
  admitted, wait, remaining, reset = true, 0, limit - count, left
  state, ttl = struct.pack('<cddd', 'i', wid, count, period), left
else
  admitted, wait, remaining = false, left, math.max(limit - count, 0)
  reset = count > 0 and left or 0
end
