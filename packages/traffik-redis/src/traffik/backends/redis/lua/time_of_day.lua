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
    -- TimeOfDay._wait: the first moment that admits the hit (_admits_from) and still does
    -- when a client told the wait in whole seconds (Retry-After) comes back: a moment that
    -- an hour allowing less ends within that second is passed over, for the first after it.
    local stop, after = now + left, now
    while wait == nil do
      -- TimeOfDay._admits_from(after): the first hour boundary of this window whose limit
      -- fits count and cost (the limits repeat each day, so 24 boundaries tell), else the
      -- first time from the window's end whose hour fits the cost (some hour does).
      local at, h = nil, floordiv(after + x, 3600000) + 1
      local boundary = h * 3600000 - x
      for _ = 1, 24 do
        if boundary >= stop then
          break
        end
        if struct.unpack('<d', day, 8 * (h % 24) + 1) >= count + cost then
          at = boundary
          break
        end
        h, boundary = h + 1, boundary + 3600000
      end
      if at == nil then
        at = math.max(stop, after + 1)
        h = floordiv(at + x, 3600000)
        while struct.unpack('<d', day, 8 * (h % 24) + 1) < cost do
          h = h + 1
          at = h * 3600000 - x
        end
      end
      -- at - now in whole seconds, rounded up
      local told = now - floordiv(now - at, 1000) * 1000
      h = floordiv(at + x, 3600000) + 1
      boundary = h * 3600000 - x
      local need = boundary < stop and count + cost or cost
      if boundary > told or struct.unpack('<d', day, 8 * (h % 24) + 1) >= need then
        wait = at - now
      else
        after = boundary
      end
    end
    if carried then -- stored as this period's (_aligned_window.lua)
      state, ttl = struct.pack('<cddd', 'i', wid, count, period), left
    end
  end
end
