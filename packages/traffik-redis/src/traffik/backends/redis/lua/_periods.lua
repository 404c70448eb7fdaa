-- Clock-aligned periods (traffik.strategies.periods), for the modules that need them: the id of
-- the period holding `now` and the ms until it ends; fractions come as whole parts of PARTS.
local PARTS = 100000

local function aligned(now, period)
  local wid = floordiv(now, period)
  return wid, period - (now - wid * period)
end
