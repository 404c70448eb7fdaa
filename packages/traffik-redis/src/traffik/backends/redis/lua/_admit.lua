-- The leaky buckets' admission (traffik.strategies.leaky_bucket._admit): whether `cost` fits on
-- top of `level` (scaled by the period), and the decision either way (admitted, wait,
-- remaining, reset). Put where a body names this file when scripts.py builds the programs (a
-- body, not a function: one defined costs server time on every call, see _prelude.lua).
local top, add = limit * period, cost * period
if level + add <= top then
  admitted, wait = true, 0
  remaining, reset = floordiv(top - level - add, period), -floordiv(-(level + add), limit)
elseif add > top then -- more than the strategy's capacity: never admitted
  admitted, wait, remaining, reset = false, period, 0, period
else
  admitted, wait = false, -floordiv(-(level + add - top), limit)
  remaining, reset = floordiv(math.max(top - level, 0), period), -floordiv(-level, limit)
end
