-- The clock-aligned window holding now (periods.aligned), for a state written in window
-- held (nil: none): a state of a later window is decided in it (decide.lua). Sets wid (the id
-- of the window holding now) and left (the ms until it ends). Put where a body names this
-- file when scripts.py builds the programs (a body, not a function).
if held ~= nil and held * period > now and held * period <= now + 60000 then -- a later window: decided in it
  now = held * period
end
local wid = floordiv(now, period)
local left = period - (now - wid * period)
