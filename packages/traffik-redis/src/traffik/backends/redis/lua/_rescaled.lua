-- traffik.strategies._another_rate.rescaled: `carried`, what `held` holds scaled by `was_unit`
-- (a unit of the rate a state of another rate was written under) scaled by `unit` (this
-- rate's) instead, the same units rounded up to a scaled unit: held * unit / was_unit,
-- rounded up, exactly. Put where a body names this file, to write a refused hit's state
-- (_another_rate.converted), which is rare: a body, not a function (see _prelude.lua). The
-- whole units of `held` are at most this rate's capacity, so their `unit`s stay below 2^53;
-- the rest is below was_unit, below 2^52 (a period of a rate decided exactly), and when its
-- product with `unit` is not below 2^53 it is taken a bit of `unit` at a time (m below
-- was_unit: every number below 2^53).
do
  local whole = floordiv(held, was_unit)
  local rest = held - whole * was_unit
  carried = whole * unit
  if rest * unit < 2 ^ 53 then
    carried = carried - floordiv(-(rest * unit), was_unit)
  else
    local bit, left, q, m = 1, unit, 0, 0
    while bit * 2 <= unit do
      bit = bit * 2
    end
    while bit >= 1 do -- q * was_unit + m = rest * (the bits of `unit` so far)
      q, m = q * 2, m * 2
      if m >= was_unit then
        q, m = q + 1, m - was_unit
      end
      if left >= bit then
        left, m = left - bit, m + rest
        if m >= was_unit then
          q, m = q + 1, m - was_unit
        end
      end
      bit = bit / 2
    end
    carried = carried + q + (m > 0 and 1 or 0)
  end
end
