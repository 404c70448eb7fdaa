-- LeakyBucket (traffik.strategies.leaky_bucket). State: {level, last_ms} ('<cdd'), the level
-- scaled by the period.
-- LeakyBucket._level: the bucket's level (scaled) at `now`.
local level, last = numbers(raw, '<cdd')
if level == nil then
  level = 0
else
  local elapsed = now > last and now - last or 0
  level = elapsed >= ceildiv(level, limit) and 0 or level - elapsed * limit
end
if REFUND then
  level = math.max(level - cost * period, 0)
  state, ttl = struct.pack('<cdd', 'i', level, now), ceildiv(level, limit)
else
  admitted, wait, remaining, reset = admit(level, limit, period, cost)
  if admitted then
    state, ttl = struct.pack('<cdd', 'i', level + cost * period, now), reset
  end
end
