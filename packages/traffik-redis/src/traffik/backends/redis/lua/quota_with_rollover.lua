-- QuotaWithRollover (traffik.strategies.rollover). State: {period_id, usage, rollover,
-- period_ms} ('<cdddd'); {period_id, usage, rollover} ('<cddd', written before the period was
-- kept) is counted in this period; one of another period carries its usage and rollover
-- into now's period while its own is open (periods.of_period).
-- x: the percentage in parts of PARTS (traffik.strategies.periods, 100000), y: the most rolled
-- over.
-- QuotaWithRollover._period: period id, ms left, usage and rollover at `now` (periods.aligned:
-- the id of the clock-aligned period holding `now`, and the ms until it ends).
local held, usage, rollover, was = numbers(raw, '<cdddd')
if held == nil then
  held, usage, rollover = numbers(raw, '<cddd')
elseif was ~= period then -- another period: its window, while it holds `now`, is now's here
  if was >= 1 and (held == floordiv(now, was) or (held * was > now and held * was <= now + 60000)) then
    held = floordiv(now, period)
  else
    held = nil
  end
end
if held ~= nil and held * period > now and held * period <= now + 60000 then -- a later period: decided in it (decide.lua)
  now = held * period
end
local pid = floordiv(now, period)
local left = period - (now - pid * period)
if held == pid then -- at most what this limit rolls over
  rollover = math.min(rollover, y, floordiv(limit * x, 100000))
elseif held == pid - 1 then
  local unused = math.min(math.max(limit - usage, 0), limit)
  usage, rollover = 0, math.min(y, floordiv(unused * x, 100000))
elseif held ~= pid then
  usage, rollover = 0, 0
end
local quota = limit + rollover
if REFUND then
  state = struct.pack('<cdddd', 'i', pid, math.max(usage - cost, 0), rollover, period)
  ttl = left + period
elseif cost > limit then
  admitted, wait, remaining, reset = false, period, 0, period
elseif usage + cost <= quota then
  usage = usage + cost
  admitted, wait, remaining, reset = true, 0, quota > usage and quota - usage or 0, left
  state, ttl = struct.pack('<cdddd', 'i', pid, usage, rollover, period), left + period
else
  admitted, wait, remaining = false, left, math.max(quota - usage, 0)
  reset = usage > 0 and left or 0
end
