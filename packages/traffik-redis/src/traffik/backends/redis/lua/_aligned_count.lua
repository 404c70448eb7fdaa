-- A clock-aligned window's count, as TieredRate and TimeOfDay read it (put where their bodies
-- name this file when scripts.py builds the programs: a body, not a function, see
-- decide.lua). State: {window_id, count, period_ms} ('<cddd'); {window_id,
-- count} ('<cdd', written before the period was kept) is counted in this period. Its window:
-- _aligned_window.lua. Sets held, count (0 unless the state is of now's window), wid and left.
local held, count, was = numbers(raw, '<cddd')
if held == nil then
  held, count = numbers(raw, '<cdd')
end
--[[ INCLUDE _aligned_window ]]
if held ~= wid then
  count = 0
end
