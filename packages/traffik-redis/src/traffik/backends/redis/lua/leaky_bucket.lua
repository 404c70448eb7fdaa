-- LeakyBucket (traffik.strategies.leaky_bucket). State: {level, last_ms, limit, period_ms}
-- ('<cdddd'), the level scaled by the period, then the rate it was written under; {level,
-- last_ms} ('<cdd', written before the rate was kept) is read as written under the current rate.
-- LeakyBucket._level: the bucket's level (scaled) at `now`.
local level, last, was_limit, was_period = numbers(raw, '<cdddd')
if level == nil then
  level, last = numbers(raw, '<cdd')
  was_limit, was_period = limit, period
end
if last ~= nil and last > now + 60000 then -- from further ahead: no state (base.dated)
  level, last = nil, nil
elseif last ~= nil and last > now then -- written at a later time: decided at it (decide.lua)
  now = last
end
-- drained: the level of a state of another rate at now, scaled by its period (nil: none).
local drained = nil
if level == nil then
  level = 0
elseif was_limit == limit and was_period == period then
  local elapsed = now > last and now - last or 0
  level = elapsed >= -floordiv(-level, limit) and 0 or level - elapsed * limit
elseif was_limit >= 1 and was_period >= 1 and 2 * was_limit * was_period < 2 ^ 53 then
  -- Written under another rate: its level in whole units (rounded up) is this rate's level
  -- (at most its capacity).
  local elapsed = now > last and now - last or 0
  drained = elapsed >= -floordiv(-level, was_limit) and 0 or level - elapsed * was_limit
  level = math.min(-floordiv(-drained, was_period), limit) * period
else
  level = 0 -- no rate: a fresh key
end
if REFUND then
  level = math.max(level - cost * period, 0)
  state, ttl = struct.pack('<cdddd', 'i', level, now, limit, period), -floordiv(-level, limit)
else
--[[ INCLUDE _admit ]]
  if admitted then
    state, ttl = struct.pack('<cdddd', 'i', level + cost * period, now, limit, period), reset
  elseif drained == nil or add > top then -- (this rate's state, or never admitted: nothing)
  elseif was_limit <= limit and drained <= limit * was_period then
    -- A bucket of the old rate holds no more than this one: its level, exactly, is stored as
    -- this rate's, and decided (_another_rate.converted).
    local held, was_unit, unit, carried = drained, was_period, period, 0
--[[ INCLUDE _rescaled ]]
    level = carried
    wait = -floordiv(-(level + add - top), limit)
    remaining, reset = floordiv(math.max(top - level, 0), period), -floordiv(-level, limit)
    state, ttl = struct.pack('<cdddd', 'i', level, now, limit, period), reset
  else -- it may hold more than this bucket: until the old state holds what this one admits
    wait = -floordiv(-(drained - (limit - cost) * was_period), was_limit)
    reset = -floordiv(-drained, was_limit)
  end
end
