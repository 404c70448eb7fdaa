-- FixedWindow's counter in a decision over items (after _counter.lua).

-- counter_decision: a hit of `cost` on the counter as it stands (the hit not counted yet).
local function counter_decide(key, limit, period, cost)
  if cost > limit then -- more than the limit: never admitted (never_admitted: one period)
    return false, period, 0, period
  end
  local raw = redis.pcall('GET', key)
  local count = tonumber(raw)
  if not count then -- anything else at the key (WRONGTYPE too): 0; another error, the script's
    if raw and raw.err and raw.err:sub(1, 9) ~= 'WRONGTYPE' then
      error(raw)
    end
    count = 0
  end
  local left = period
  if count ~= 0 then
    local pttl = redis.call('PTTL', key)
    if pttl >= 0 and pttl + 1 > period + 60000 then -- too late (_counter.lua): cut, but in a peek
      if MODE ~= 112 then
        redis.call('PEXPIRE', key, string.format('%d', math.max(period - 1, 1)))
      end
    elseif pttl >= 0 then
      left = pttl + 1
    end
  end
  if count + cost > limit then
    return false, left, 0, left
  end
  return true, 0, limit - count - cost, left
end

-- The hit counted: a new window opens with it, one period long.
local function counter_charge(key, period, cost)
  counter_add(key, string.format('%d', cost), math.max(period - 1, 1))
end

-- `cost` given back: a decrement, never below 0, keeping the time to live (defined only when
-- giving back).
local counter_refund
if REFUND then
  function counter_refund(key, cost)
    local raw = redis.pcall('GET', key)
    local count = tonumber(raw)
    if not count and raw and raw.err and raw.err:sub(1, 9) ~= 'WRONGTYPE' then
      error(raw)
    end
    if count and count > 0 then
      redis.call('DECRBY', key, string.format('%d', math.min(count, cost)))
    end
  end
end
