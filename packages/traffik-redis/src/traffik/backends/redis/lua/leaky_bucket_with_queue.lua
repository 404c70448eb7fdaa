-- LeakyBucketWithQueue (traffik.strategies.leaky_bucket). State: {last_ms, t1, left1, t2,
-- left2, ..., limit, -period_ms}, each left scaled by the period, then the rate it was written
-- under, its period negative (a left never is: a state without it, written before the rate was
-- kept, is read as written under the current rate).
-- LeakyBucketWithQueue._queue: what is still queued at `now` and its level, kept in the state's
-- own table after its head, which becomes `now` (the time it was drained to). A decision reads
-- a queue of up to 4096 numbers with one struct call and checks it in the loop that drains it
-- (the fast read), which takes the queue as stored when it was written under this rate, every
-- number is whole and of magnitude below 2^53 (as load_state requires) and every left is >= 0.
-- When it was drained to now already and keeps all its entries (`same`: hits within one
-- millisecond), the value stays as stored, and an admitted hit writes its entry over the rate
-- and the rate after it. A queue the fast read leaves, and a refund, take the general read:
-- load_state, then the same drain (under the rate it was written under, then made this rate's).
local level, kept, queue, plain, same = 0, 1, nil, false, false
-- other_level: the level of a state of another rate at now, scaled by its period (a unit,
-- other_unit), which drains other_drain per ms (nil: none), and its entries then (others).
local other_level, other_unit, other_drain, others = nil, 0, 0, nil
local size = raw and (#raw - 1) / 8 or 0
if not REFUND and size >= 3 and size <= 4096 and size % 2 == 1
  and string.byte(raw, 1) == 105 -- 'i'
then
  queue = {struct.unpack(size <= 64 and string.sub(DOUBLES, 1, size + 1)
    or '<' .. string.rep('d', size), raw, 2)}
  local last = queue[1]
  if last % 1 == 0 and last > now and last <= now + 60000 then -- later: decided at it (decide.lua)
    now = last
  end
  -- A full bucket drains in one period: longer idle times change nothing more.
  local idle = now - last
  local drained = (idle < 0 and 0 or idle > period and period or idle) * limit
  -- whole: the sum of the numbers' fractional parts (0 when all are whole; NaN's and the
  -- infinities' are NaN), 1 for a number the fast read leaves to the general one.
  local whole = last % 1
  if queue[size - 1] ~= limit or queue[size] ~= -period then
    whole = 1
  end
  -- The drain: the entries it empties leave, the first it leaves partly keeps the rest.
  local i = 2
  while drained > 0 and i <= size - 3 do
    local t, left = queue[i], queue[i + 1]
    whole = whole + t % 1 + left % 1
    if t <= -2 ^ 53 or t >= 2 ^ 53 or left < 0 or left >= 2 ^ 53 then
      whole = 1
    elseif drained >= left then
      drained = drained - left
    else
      queue[kept + 1], queue[kept + 2] = t, left - drained
      kept, level, drained = kept + 2, level + left - drained, 0
    end
    i = i + 2
  end
  -- The entries after it stay whole, checked and counted (in place when none left: always
  -- for hits within one millisecond). An entry with nothing left leaves even undrained: the
  -- general read takes it.
  if kept + 1 == i then
    for j = i, size - 3, 2 do
      local t, left = queue[j], queue[j + 1]
      whole = whole + t % 1 + left % 1
      if t <= -2 ^ 53 or t >= 2 ^ 53 or left <= 0 or left >= 2 ^ 53 then
        whole = 1
      end
      level = level + left
    end
  else
    for j = i, size - 3, 2 do
      local t, left = queue[j], queue[j + 1]
      whole = whole + t % 1 + left % 1
      if t <= -2 ^ 53 or t >= 2 ^ 53 or left <= 0 or left >= 2 ^ 53 then
        whole = 1
      end
      queue[kept + j - i + 1], queue[kept + j - i + 2] = t, left
      level = level + left
    end
  end
  kept = kept + size - 1 - i
  plain = whole == 0 and last > -2 ^ 53 and last < 2 ^ 53 and last <= now + 60000
  same = plain and last == now and kept == size - 2
end
if not plain then
--[[ INCLUDE _list_io ]]
  level, kept, queue, now = 0, 1, load_state(raw, 105), clock -- 'i'
  if queue ~= nil and #queue % 2 == 1 and queue[1] > now + 60000 then
    queue = nil -- from further ahead: no state (base.dated)
  end
  if queue ~= nil and #queue % 2 == 1 then
    if queue[1] > now then -- written at a later time: decided at it (decide.lua)
      now = queue[1]
    end
    local len = #queue
    local was_limit, was_period = limit, period
    if len >= 3 and queue[len] < 0 then
      was_limit, was_period = queue[len - 1], -queue[len]
      len = len - 2
    end
    local valid = was_limit >= 1 and 2 * was_limit * was_period < 2 ^ 53
    local idle = now - queue[1]
    local drained = (idle < 0 and 0 or idle > was_period and was_period or idle) * was_limit
    for i = 2, valid and len - 1 or 0, 2 do
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
    if valid and (was_limit ~= limit or was_period ~= period) then
      other_level, other_unit, other_drain = level, was_period, was_limit
      others = {}
      for i = 2, kept do
        others[i - 1] = queue[i]
      end
      -- LeakyBucketWithQueue._rescaled: the level in whole units (rounded up, at most this
      -- rate's capacity), kept by the newest entries, each its own units rounded up.
      local units = math.min(-floordiv(-level, was_period), limit)
      local first = kept + 1
      level = 0
      for i = kept - 1, 2, -2 do
        if units == 0 then
          break
        end
        local taken = math.min(-floordiv(-queue[i + 1], was_period), units)
        units = units - taken
        queue[i + 1] = taken * period
        level = level + taken * period
        first = i
      end
      local j = 2
      for i = first, kept do
        queue[j] = queue[i]
        j = j + 1
      end
      kept = j - 1
    end
  else
    queue = {now}
  end
end
if REFUND then -- the newest entries leave first
  for i = #queue, kept + 1, -1 do
    queue[i] = nil
  end
  queue[1] = now
  take_newest(queue, cost * period)
  level = 0
  for i = 3, #queue, 2 do
    level = level + queue[i]
  end
  queue[#queue + 1], queue[#queue + 2] = limit, -period
  state, ttl = pack_state(queue, 105), -floordiv(-level, limit)
else
--[[ INCLUDE _admit ]]
  if admitted then
    ttl = reset
    local added = struct.pack('<dddd', now, cost * period, limit, -period)
    if same then
      -- On the server's clock the key keeps its time to live (`ttl` false: no PEXPIRE) when
      -- the one it would get comes to the same PX (decide.lua): its head is now, so it was
      -- last written in this millisecond of the server's, with a life from the level it
      -- holds, `level`.
      if SERVER and (reset <= 2 or -floordiv(-level, limit) == reset) then
        state, ttl = {#raw - 16, added}, false
      else
        state = string.sub(raw, 1, #raw - 16) .. added
      end
    else
      for i = #queue, kept + 1, -1 do -- past the entries kept (and the struct call's position)
        queue[i] = nil
      end
      queue[1] = now
      queue[kept + 1], queue[kept + 2] = now, cost * period
      queue[kept + 3], queue[kept + 4] = limit, -period
--[[ INCLUDE _list_io ]]
      state = pack_state(queue, 105)
    end
  elseif other_level == nil or add > top then -- (this rate's state, or never admitted: nothing)
  elseif other_drain <= limit and other_level <= limit * other_unit then
    -- A bucket of the old rate holds no more than this one: its entries, exactly, are stored
    -- as this rate's, and decided (_another_rate.converted, LeakyBucketWithQueue._exactly:
    -- each sum from the head rescaled, an entry left with nothing leaving).
    local total, before, j = 0, 0, 2
    queue = {now}
    for i = 1, #others - 1, 2 do
      total = total + others[i + 1]
      local held, was_unit, unit, carried = total, other_unit, period, 0
--[[ INCLUDE _rescaled ]]
      if carried > before then
        queue[j], queue[j + 1] = others[i], carried - before
        j, before = j + 2, carried
      end
    end
    level = before
    queue[j], queue[j + 1] = limit, -period
    wait = -floordiv(-(level + add - top), limit)
    remaining, reset = floordiv(math.max(top - level, 0), period), -floordiv(-level, limit)
    state, ttl = pack_state(queue, 105), reset
  else -- it may hold more than this bucket: until the old state holds what this one admits
    wait = -floordiv(-(other_level - (limit - cost) * other_unit), other_drain)
    reset = -floordiv(-other_level, other_drain)
  end
end
