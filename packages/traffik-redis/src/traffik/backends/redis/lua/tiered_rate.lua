-- TieredRate (traffik.strategies.tiered): a clock-aligned window. The limit it receives is the
-- tier's already (the item's rate is the effective one). Its state and window: _aligned_count.lua.
--[[ INCLUDE _aligned_count ]]
if REFUND then
  state, ttl = struct.pack('<cddd', 'i', wid, math.max(count - cost, 0), period), left
elseif cost > limit then
  admitted, wait, remaining, reset = false, period, 0, period
elseif count + cost <= limit then
  count = count + cost
  admitted, wait, remaining, reset = true, 0, limit - count, left
  state, ttl = struct.pack('<cddd', 'i', wid, count, period), left
else
  admitted, wait, remaining = false, left, math.max(limit - count, 0)
  reset = count > 0 and left or 0
  if carried then -- stored as this period's (_aligned_window.lua)
    state, ttl = struct.pack('<cddd', 'i', wid, count, period), left
  end
end
