-- TimeOfDay (traffik.strategies.time_of_day): a clock-aligned window whose limit is its hour's.
-- Its state and window, as TieredRate's: _aligned_count.lua.
-- x: the time zone's offset in ms; y: the place in ARGV of the strategy's table
-- (script_table): 25 little-endian doubles, the limit of each hour of the day (0 to 23, in
-- its time zone: int(limit * multiplier), computed in Python, so no float is multiplied
-- here), then the most of them (capacity). `told`: the limit the decision tells (its hour's).
local day = ARGV[y]
--[[ INCLUDE _aligned_count ]]
if REFUND then
  state, ttl = struct.pack('<cddd', 'i', wid, math.max(count - cost, 0), period), left
elseif cost > struct.unpack('<d', day, 193) then -- more than any hour allows: never_admitted
  admitted, wait, remaining, reset, told = false, period, 0, period, limit
else
  -- limit_at(now): the hour of now + x in the day
  local hour = floordiv(now + x, 3600000)
  local most = struct.unpack('<d', day, 8 * (hour % 24) + 1)
  told = most
  if count + cost <= most then
    count = count + cost
    admitted, wait, remaining, reset = true, 0, most - count, left
    state, ttl = struct.pack('<cddd', 'i', wid, count, period), left
  else
    admitted, remaining = false, math.max(most - count, 0)
    reset = count > 0 and left or 0
    -- TimeOfDay._wait: the first hour boundary of this window whose limit fits count and
    -- cost (the limits repeat each day, so 24 boundaries tell), else the first time from
    -- the window's end whose hour fits the cost (some hour does: cost <= capacity).
    local stop, at = now + left, (hour + 1) * 3600000 - x
    for _ = 1, 24 do
      if at >= stop then
        break
      end
      hour = hour + 1
      if struct.unpack('<d', day, 8 * (hour % 24) + 1) >= count + cost then
        wait = at - now
        break
      end
      at = at + 3600000
    end
    if wait == nil then
      at = stop
      hour = floordiv(at + x, 3600000)
      while struct.unpack('<d', day, 8 * (hour % 24) + 1) < cost do
        hour = hour + 1
        at = hour * 3600000 - x
      end
      wait = at - now
    end
  end
end
