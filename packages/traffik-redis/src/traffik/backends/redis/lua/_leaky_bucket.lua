-- Shared by the two leaky bucket scripts (after the prelude). Mirrors leaky_bucket._admit:
-- whether `cost` fits on top of `level` (scaled by the period), the reply either way, and
-- the time until the bucket is empty.
local function admit(level, limit, period, cost)
  local top, add = limit * period, cost * period
  if level + add <= top then
    local reset = ceildiv(level + add, limit)
    return true, allowed(floordiv(top - level - add, period), reset), reset
  end
  local reset = ceildiv(level, limit)
  local remaining = floordiv(math.max(top - level, 0), period)
  return false, rejected(ceildiv(level + add - top, limit), remaining, reset), reset
end
