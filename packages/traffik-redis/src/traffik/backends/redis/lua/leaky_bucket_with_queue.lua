-- LeakyBucketWithQueue (traffik.strategies.leaky_bucket). State: {last_ms, t1, left1, t2,
-- left2, ...}, each left scaled by the period.
-- LeakyBucketWithQueue._queue: what is still queued at `now` and its level, kept in the state's
-- own table after its head, which becomes `now` (the time it was drained to).
local queue, level, kept = load_state(raw, 105), 0, 1 -- 'i'
if queue ~= nil and #queue % 2 == 1 then
  local len = #queue
  -- A full bucket drains in one period: longer idle times change nothing more.
  local idle = now - queue[1]
  local drained = (idle < 0 and 0 or idle > period and period or idle) * limit
  for i = 2, len - 1, 2 do
    local left = queue[i + 1]
    if drained >= left then
      drained = drained - left
    else
      queue[kept + 1], queue[kept + 2] = queue[i], left - drained
      kept = kept + 2
      level = level + left - drained
      drained = 0
    end
  end
  for i = len, kept + 1, -1 do
    queue[i] = nil
  end
  queue[1] = now
else
  queue = {now}
end
if REFUND then -- the newest entries leave first
  take_newest(queue, cost * period)
  level = 0
  for i = 3, #queue, 2 do
    level = level + queue[i]
  end
  state, ttl = pack_state(queue, 105), ceildiv(level, limit)
else
  admitted, wait, remaining, reset = admit(level, limit, period, cost)
  if admitted then
    queue[kept + 1], queue[kept + 2] = now, cost * period
    state, ttl = pack_state(queue, 105), reset
  end
end
