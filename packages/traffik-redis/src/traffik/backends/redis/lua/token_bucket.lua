-- TokenBucket.transition (TokenBucketWithDebt too, through its floor). State: {tokens, last_ms}.
-- numbers(), the first 5: limit, period_ms, cost, bucket size, debt floor.
local limit, period, cost, bucket, debt = numbers()
local now = now_ms()
local refill = limit / period
local tokens = bucket
local state = load_state()
if state ~= nil and #state == 2 then
  tokens = math.min(bucket, state[1] + math.max(now - state[2], 0.0) * refill)
end
if tokens - cost >= -debt - EPSILON then
  tokens = tokens - cost
  local full_in = (bucket - tokens) / refill
  save_state({tokens, now}, math.max(full_in, 1.0))
  return allowed(math.floor(tokens + debt + EPSILON), full_in)
end
local wait = (cost - debt - tokens) / refill
local remaining = math.max(math.floor(tokens + debt + EPSILON), 0)
return rejected(whole_ms(wait), remaining, (bucket - tokens) / refill)
