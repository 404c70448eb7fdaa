-- The clock-aligned window holding now (periods.aligned), as TieredRate, TimeOfDay and
-- QuotaWithRollover read it (put where a body names this file when scripts.py builds the
-- programs: a body, not a function, see decide.lua). Takes held, the window id a state was
-- written in, and was, the period it was written under (nil: written before the period was
-- kept, counted in this one); a state of another period stands for now's window here while
-- its own window holds now (periods.of_period), else it is forgotten (held = nil). A state of
-- a later window is decided in it. Sets wid (the id of the window holding now) and left (the
-- ms until it ends).
if was ~= nil and was ~= period then
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
