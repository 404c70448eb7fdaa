-- Token buckets (traffik.strategies.token_bucket): TokenBucket, and TokenBucketWithDebt through
-- its debt. State: {tokens, last_ms}, tokens scaled by the period. Parameters after limit,
-- period and cost: the bucket size and the debt allowed, in tokens.
local token_bucket = {}

-- TokenBucket._tokens: the tokens (scaled) in the bucket at `now`; a missing key is a full bucket.
local function bucket_tokens(state, now, limit, full)
  if state == nil or #state ~= 2 then
    return full
  end
  local tokens, elapsed = state[1], max(now - state[2], 0)
  if elapsed >= ceildiv(full - tokens, limit) then
    return full
  end
  return tokens + elapsed * limit
end

function token_bucket.transition(state, now, limit, period, cost, bucket, debt)
  local full, bottom = bucket * period, -debt * period
  local tokens = bucket_tokens(state, now, limit, full)
  local need = cost * period
  if tokens - need >= bottom then
    tokens = tokens - need
    local full_in = ceildiv(full - tokens, limit)
    return true, 0, floordiv(tokens - bottom, period), full_in, {tokens, now}, max(full_in, 1)
  end
  local wait = ceildiv(need - tokens + bottom, limit)
  local remaining = max(floordiv(tokens - bottom, period), 0)
  return false, wait, remaining, ceildiv(full - tokens, limit)
end

if REFUND then
  function token_bucket.refund(state, now, limit, period, cost, bucket)
    local full = bucket * period
    local tokens = min(full, bucket_tokens(state, now, limit, full) + cost * period)
    return {tokens, now}, max(ceildiv(full - tokens, limit), 1)
  end
end
