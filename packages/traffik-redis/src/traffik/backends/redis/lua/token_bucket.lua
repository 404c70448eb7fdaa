-- TokenBucket.transition (TokenBucketWithDebt too, through its debt). State: {tokens, last_ms},
-- tokens scaled by the period. numbers(): limit, period_ms, cost, bucket size, max debt.
local limit, period, cost, bucket, debt = numbers()
local now = now_ms()
local full, bottom = bucket * period, -debt * period
local tokens = full
local state = load_state()
if state ~= nil and #state == 2 then
  tokens = state[1]
  local elapsed = math.max(now - state[2], 0)
  if elapsed >= ceildiv(full - tokens, limit) then
    tokens = full
  else
    tokens = tokens + elapsed * limit
  end
end
local need = cost * period
if tokens - need >= bottom then
  tokens = tokens - need
  local full_in = ceildiv(full - tokens, limit)
  save_state({tokens, now}, math.max(full_in, 1))
  return allowed(floordiv(tokens - bottom, period), full_in)
end
return rejected(
  ceildiv(need - tokens + bottom, limit),
  math.max(floordiv(tokens - bottom, period), 0),
  ceildiv(full - tokens, limit)
)
