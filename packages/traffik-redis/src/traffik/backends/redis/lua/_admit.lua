-- The leaky buckets' admission (traffik.strategies.leaky_bucket._admit): whether `cost` fits on
-- top of `level` (scaled by the period), and the decision either way (admitted, wait,
-- remaining, reset).
local function admit(level, limit, period, cost)
  local top, add = limit * period, cost * period
  if level + add <= top then
    return true, 0, floordiv(top - level - add, period), ceildiv(level + add, limit)
  end
  if add > top then -- more than the strategy's capacity: never admitted
    return false, period, 0, period
  end
  local remaining = floordiv(math.max(top - level, 0), period)
  return false, ceildiv(level + add - top, limit), remaining, ceildiv(level, limit)
end
