-- CostBasedTokenBucket's helpers (cost_based_token_bucket.lua).

-- CostBasedTokenBucket._refill: scaled tokens refilled per ms, for a history of n costs
-- totalling `total`.
local function cost_refill(n, total, limit, least)
  if n == 0 or total <= 0 then
    return limit * 1000
  end
  local multiplier = floordiv(1000 * n, total) -- within least and 1000
  return limit * (multiplier < least and least or multiplier > 1000 and 1000 or multiplier)
end

