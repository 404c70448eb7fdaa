-- Token buckets (traffik.strategies.token_bucket): TokenBucket, and TokenBucketWithDebt through
-- its debt. State: {tokens, last_ms} ('<cdd'), tokens scaled by the period. x: the bucket size,
-- y: the debt allowed, in tokens.
local full, bottom, need = x * period, -y * period, cost * period
-- TokenBucket._tokens: the tokens (scaled) in the bucket at `now`; a missing key is a full
-- bucket.
local tokens, last = numbers(raw, '<cdd')
if tokens == nil then
  tokens = full
else
  local elapsed = now > last and now - last or 0
  tokens = elapsed >= ceildiv(full - tokens, limit) and full or tokens + elapsed * limit
end
if REFUND then
  tokens = math.min(full, tokens + need)
  state, ttl = struct.pack('<cdd', 'i', tokens, now), ceildiv(full - tokens, limit)
elseif tokens - need >= bottom then
  tokens = tokens - need
  reset = ceildiv(full - tokens, limit)
  admitted, wait, remaining = true, 0, floordiv(tokens - bottom, period)
  state, ttl = struct.pack('<cdd', 'i', tokens, now), reset
elseif need > full - bottom then -- more than the strategy's capacity: never admitted
  admitted, wait, remaining, reset = false, period, 0, period
else
  admitted, wait = false, ceildiv(need - tokens + bottom, limit)
  remaining = math.max(floordiv(tokens - bottom, period), 0)
  reset = ceildiv(full - tokens, limit)
end
