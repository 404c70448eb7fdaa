-- QuotaWithRollover (traffik.strategies.rollover). State: {period_id, usage, rollover,
-- period_ms} ('<cdddd'); {period_id, usage, rollover} ('<cddd', written before the period was
-- kept) is counted in this period; one of another period carries its usage and rollover
-- into now's period while its own is open (periods.of_period).
-- x: the percentage in parts of PARTS (traffik.strategies.periods, 100000), y: the most rolled
-- over.
-- QuotaWithRollover._period: period id (wid), ms left, usage and rollover at `now`; its
-- window: _aligned_window.lua.
local held, usage, rollover, was = numbers(raw, '<cdddd')
if held == nil then
  held, usage, rollover = numbers(raw, '<cddd')
end
--[[ INCLUDE _aligned_window ]]
if held == wid then -- at most what this limit rolls over
  rollover = math.min(rollover, y, floordiv(limit * x, 100000))
elseif held == wid - 1 and usage > 0 then -- (seen then: hits all given back are not)
  local unused = math.min(math.max(limit - usage, 0), limit)
  usage, rollover = 0, math.min(y, floordiv(unused * x, 100000))
elseif held ~= wid then
  usage, rollover = 0, 0
end
local quota = limit + rollover
if REFUND then
  state = struct.pack('<cdddd', 'i', wid, math.max(usage - cost, 0), rollover, period)
  ttl = left + period
elseif cost > limit then
  admitted, wait, remaining, reset = false, period, 0, period
elseif usage + cost <= quota then
  usage = usage + cost
  admitted, wait, remaining, reset = true, 0, quota > usage and quota - usage or 0, left
  state, ttl = struct.pack('<cdddd', 'i', wid, usage, rollover, period), left + period
else
  admitted, wait, remaining = false, left, math.max(quota - usage, 0)
  reset = usage > 0 and left or 0
  if carried then -- stored as this period's (_aligned_window.lua)
    state = struct.pack('<cdddd', 'i', wid, usage, rollover, period)
    ttl = left + period
  end
end
