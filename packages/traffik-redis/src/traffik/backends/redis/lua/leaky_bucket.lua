-- Leaky buckets (traffik.strategies.leaky_bucket): LeakyBucket and LeakyBucketWithQueue.

-- leaky_bucket._admit: whether `cost` fits on top of `level` (scaled by the period), and the
-- decision either way (admitted, wait, remaining, reset).
local function admit(level, limit, period, cost)
  local top, add = limit * period, cost * period
  if level + add <= top then
    return true, 0, floordiv(top - level - add, period), ceildiv(level + add, limit)
  end
  local remaining = floordiv(max(top - level, 0), period)
  return false, ceildiv(level + add - top, limit), remaining, ceildiv(level, limit)
end

-- LeakyBucket. State: {level, last_ms}, the level scaled by the period.
local leaky_bucket = {}

-- LeakyBucket._level: the bucket's level (scaled) at `now`.
local function bucket_level(state, now, limit)
  if state == nil or #state ~= 2 then
    return 0
  end
  local level, elapsed = state[1], max(now - state[2], 0)
  if elapsed >= ceildiv(level, limit) then
    return 0
  end
  return level - elapsed * limit
end

function leaky_bucket.transition(state, now, limit, period, cost)
  local level = bucket_level(state, now, limit)
  local admitted, wait, remaining, reset = admit(level, limit, period, cost)
  if not admitted then
    return false, wait, remaining, reset
  end
  return true, 0, remaining, reset, {level + cost * period, now}, max(reset, 1)
end

if REFUND then
  function leaky_bucket.refund(state, now, limit, period, cost)
    local level = max(bucket_level(state, now, limit) - cost * period, 0)
    return {level, now}, max(ceildiv(level, limit), 1)
  end
end

-- LeakyBucketWithQueue. State: {last_ms, t1, left1, t2, left2, ...}, each left scaled by the
-- period.
local leaky_bucket_with_queue = {}

-- LeakyBucketWithQueue._queue: what is still queued at `now`, {t1, left1, ...}, and its level.
local function bucket_queue(state, now, limit, period)
  local queue, level = {}, 0
  if state ~= nil and #state % 2 == 1 then
    -- A full bucket drains in one period: longer idle times change nothing more.
    local drained = min(max(now - state[1], 0), period) * limit
    for i = 2, #state - 1, 2 do
      local left = state[i + 1]
      if drained >= left then
        drained = drained - left
      else
        queue[#queue + 1] = state[i]
        queue[#queue + 1] = left - drained
        level = level + left - drained
        drained = 0
      end
    end
  end
  return queue, level
end

-- The state for a queue: the time it was drained to, then the queue; and its level's TTL.
local function queue_state(queue, now, level, limit)
  local state = {now}
  for i = 1, #queue do
    state[i + 1] = queue[i]
  end
  return state, max(ceildiv(level, limit), 1)
end

function leaky_bucket_with_queue.transition(state, now, limit, period, cost)
  local queue, level = bucket_queue(state, now, limit, period)
  local admitted, wait, remaining, reset = admit(level, limit, period, cost)
  if not admitted then
    return false, wait, remaining, reset
  end
  queue[#queue + 1] = now
  queue[#queue + 1] = cost * period
  return true, 0, remaining, reset, queue_state(queue, now, level + cost * period, limit)
end

-- The newest entries leave first.
if REFUND then
  function leaky_bucket_with_queue.refund(state, now, limit, period, cost)
    local queue = bucket_queue(state, now, limit, period)
    take_newest(queue, cost * period)
    local level = 0
    for i = 2, #queue, 2 do
      level = level + queue[i]
    end
    return queue_state(queue, now, level, limit)
  end
end
