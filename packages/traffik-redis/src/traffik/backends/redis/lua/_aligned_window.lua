-- The clock-aligned window holding now (periods.aligned), as TieredRate, TimeOfDay and
-- QuotaWithRollover read it (put where a body names this file when scripts.py builds the
-- programs: a body, not a function, see decide.lua). Takes held, the window id a state was
-- written in, and was, the period it was written under (nil: written before the period was
-- kept, counted in this one); a state of another period stands for now's window here while
-- its own window holds now (periods.of_period), else it is forgotten (held = nil); carried
-- says which (a refused hit stores what it carried: traffik.strategies.base.Transition). Then
-- _window_now.lua sets wid and left.
local carried = was ~= nil and was ~= period
if carried then
  if was >= 1 and (held == floordiv(now, was) or (held * was > now and held * was <= now + 60000)) then
    held = floordiv(now, period)
  else
    held, carried = nil, false
  end
end
--[[ INCLUDE _window_now ]]
