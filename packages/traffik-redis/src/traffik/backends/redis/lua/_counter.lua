-- FixedWindow's counter (traffik.strategies.fixed_window): a plain integer whose time to live
-- is the window. Redis keeps a key through the millisecond of its expiry, so a key whose PTTL
-- is p is gone p + 1 ms from now.

-- INCRBY, and a time to live of `px` ms whenever the key has none (new, or made immortal
-- elsewhere), or one that outlives it by more than 60000 ms (fixed_window.too_late: opened
-- before the server's clock stepped back, or under a longer period; its count kept): never an
-- immortal counter, nor one that holds a client until a clock catches up. Returns the count
-- and the ms until the key is gone. A value no counter wrote (another type: WRONGTYPE; not a
-- whole number, or one the amount would overflow: "not an integer", "would overflow") is
-- replaced by a new window, as a missing key is; any other error (an ACL refusal, OOM) is the
-- script's error (error() of the error reply raises it as it came), never a new window.
local function counter_add(key, amount, px)
  local count = redis.pcall('INCRBY', key, amount)
  if type(count) == 'table' then
    local err = count.err
    if not (err:find('WRONGTYPE', 1, true) or err:find('not an integer', 1, true)
      or err:find('would overflow', 1, true)) then
      error(count)
    end
    redis.call('SET', key, amount, 'PX', px)
    return tonumber(amount), tonumber(px) + 1
  end
  local pttl = redis.call('PTTL', key)
  if pttl < 0 or pttl > px + 60000 then
    redis.call('PEXPIRE', key, px)
    pttl = tonumber(px)
  end
  return count, pttl + 1
end
