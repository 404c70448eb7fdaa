-- Token buckets (traffik.strategies.token_bucket): TokenBucket, and TokenBucketWithDebt through
-- its debt. State: {tokens, last_ms, limit, period_ms} ('<cdddd'), tokens scaled by the period,
-- then the rate it was written under; {tokens, last_ms} ('<cdd', written before the rate was
-- kept) is read as written under the current rate. x: the bucket size (0: the limit), y: the
-- debt allowed, in tokens.
local size = x == 0 and limit or x
local full, bottom, need = size * period, -y * period, cost * period
-- TokenBucket._tokens: the tokens (scaled) in the bucket at `now`; a missing key is a full
-- bucket.
local tokens, last, was_limit, was_period = numbers(raw, '<cdddd')
if tokens == nil then
  tokens, last = numbers(raw, '<cdd')
  was_limit, was_period = limit, period
end
if last ~= nil and last > now + 60000 then -- from further ahead: no state (base.dated)
  tokens, last = nil, nil
elseif last ~= nil and last > now then -- written at a later time: decided at it (decide.lua)
  now = last
end
-- missed: what a state of another rate still misses at now, scaled by its period (nil: none);
-- old: the size of a bucket of that rate.
local missed, old = nil, 0
if tokens ~= nil and (was_limit ~= limit or was_period ~= period) then
  -- TokenBucket._missing: the whole units (rounded up) the bucket missed at now under the
  -- rate it was written under, missing from this rate's bucket (at most its capacity); a
  -- rate this bucket cannot decide exactly is no state.
  old = x == 0 and was_limit or x
  if was_limit >= 1 and was_period >= 1 and 2 * (old + y) * was_period < 2 ^ 53 then
    local missing, elapsed = old * was_period - tokens, now > last and now - last or 0
    missed = 0
    if elapsed < -floordiv(-missing, was_limit) then
      missed = missing - elapsed * was_limit
    end
  end
  tokens, last = nil, nil
  if missed ~= nil then
    tokens, last = full - math.min(-floordiv(-missed, was_period), size + y) * period, now
  end
end
if tokens == nil then
  tokens = full
else
  local elapsed = now > last and now - last or 0
  tokens = elapsed >= -floordiv(-(full - tokens), limit) and full or tokens + elapsed * limit
end
if REFUND then
  tokens = math.min(full, tokens + need)
  state = struct.pack('<cdddd', 'i', tokens, now, limit, period)
  ttl = -floordiv(-(full - tokens), limit)
elseif tokens - need >= bottom then
  tokens = tokens - need
  reset = -floordiv(-(full - tokens), limit)
  admitted, wait, remaining = true, 0, floordiv(tokens - bottom, period)
  state, ttl = struct.pack('<cdddd', 'i', tokens, now, limit, period), reset
elseif need > full - bottom then -- more than the strategy's capacity: never admitted
  admitted, wait, remaining, reset = false, period, 0, period
else
  admitted, wait = false, -floordiv(-(need - tokens + bottom), limit)
  remaining = math.max(floordiv(tokens - bottom, period), 0)
  reset = -floordiv(-(full - tokens), limit)
  if missed == nil then -- (this rate's state: nothing written)
  elseif old <= size and missed <= (size + y) * was_period then
    -- A bucket of the old rate holds no more than this one: what it holds, exactly, is
    -- stored as this rate's, and decided (_another_rate.converted).
    local held, was_unit, unit, carried = missed, was_period, period, 0
--[[ INCLUDE _rescaled ]]
    tokens = full - carried
    wait = -floordiv(-(need - tokens + bottom), limit)
    remaining = math.max(floordiv(tokens - bottom, period), 0)
    reset = -floordiv(-(full - tokens), limit)
    state, ttl = struct.pack('<cdddd', 'i', tokens, now, limit, period), reset
  else -- it may hold more than this bucket: until the old state holds what this one admits
    wait = -floordiv(-(missed - (size + y - cost) * was_period), was_limit)
    reset = -floordiv(-missed, was_limit)
  end
end
