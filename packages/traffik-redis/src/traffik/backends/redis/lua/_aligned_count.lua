-- A clock-aligned window's count, as TieredRate and TimeOfDay read it (put where their bodies
-- name this file when scripts.py builds the programs: a body, not a function, see
-- decide.lua). State: {window_id, count, period_ms} ('<cddd'); {window_id,
-- count} ('<cdd', written before the period was kept) is counted in this period; one of
-- another period carries its count into now's window while its own window is open
-- (periods.of_period). Sets held, count (0 unless the state is of now's window), wid (the id
-- of the clock-aligned window holding now, periods.aligned) and left (the ms until it ends).
local held, count, was = numbers(raw, '<cddd')
if held == nil then
  held, count = numbers(raw, '<cdd')
elseif was ~= period then -- another period: its window, while it holds `now`, is now's here
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
if held ~= wid then
  count = 0
end
