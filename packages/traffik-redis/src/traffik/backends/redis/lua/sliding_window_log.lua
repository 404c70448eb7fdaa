-- SlidingWindowLog (traffik.strategies.sliding_window). State: {t1, cost1, t2, cost2, ...},
-- oldest first.
-- SlidingWindowLog._log: the entries still inside the window, log[o + 1 .. n], and their
-- total cost. A decision reads a log of up to 4096 numbers with one struct call and checks it
-- in the loop that counts it (the fast read), which takes the log as stored when every number
-- is whole and of magnitude below 2^53 (as load_state requires), every cost is >= 0, and the
-- entries out of the window come first (as when the times are in order: a clock that never
-- goes back writes them so). The o numbers before the window then leave the value, which is
-- written from the stored bytes (`raw`), and changed in place when no entry left the window
-- (SETRANGE, decide.lua): the cost added to the newest entry, or an entry appended. A log the
-- fast read leaves, and a refund, take the general read: load_state, the entries inside the
-- window moved to the front of the list (n = kept, o = 0), the list packed anew.
local start, total, kept, log, n, o, plain = now - period, 0, 0, nil, 0, 0, false
local size = raw and (#raw - 1) / 8 or 0
if not REFUND and size >= 2 and size <= 4096 and size % 2 == 0 and start > -2 ^ 53
  and string.byte(raw, 1) == 105 -- 'i'
then
  log = {struct.unpack(size <= 64 and string.sub(DOUBLES, 1, size + 1)
    or '<' .. string.rep('d', size), raw, 2)}
  local newest = log[size - 1] -- the last entry's time: a later one is decided at (decide.lua)
  if newest % 1 == 0 and newest > now and newest <= now + 60000 then
    now, start = newest, newest - period
  end
  -- whole: the sum of the numbers' fractional parts (0 when all are whole; NaN's and the
  -- infinities' are NaN), 1 for a number the fast read leaves to the general one. last:
  -- where the last entry out of the window starts. A time inside the window is above start,
  -- and so above -2^53.
  local whole, last = 0, -1
  for i = 1, size - 1, 2 do
    local t, c = log[i], log[i + 1]
    whole = whole + t % 1 + c % 1
    if t > start and t < 2 ^ 53 and c >= 0 then
      total, kept = total + c, kept + 2
    elseif t <= start and t > -2 ^ 53 and c >= 0 and c < 2 ^ 53 then
      last = i
    else
      whole = 1
    end
  end
  -- The costs inside the window are >= 0: their total below 2^53 bounds each.
  if whole == 0 and total < 2 ^ 53 and last == size - kept - 1 and newest <= now + 60000 then
    n, o, plain = size, size - kept, true
  end
end
if not plain then
--[[ INCLUDE _list_io ]]
  log, now = load_state(raw, 105) or {}, clock -- 'i'
  local len = #log
  if len >= 2 and log[len - len % 2 - 1] > now + 60000 then -- from further ahead: no state (base.dated)
    log, len = {}, 0
  elseif len >= 2 and log[len - len % 2 - 1] > now then -- the last entry's time, when later
    now = log[len - len % 2 - 1]
  end
  start = now - period
  total, kept = 0, 0
  for i = 1, len - 1, 2 do
    local t = log[i]
    if t > start then
      local c = log[i + 1]
      log[kept + 1], log[kept + 2] = t, c
      kept = kept + 2
      total = total + c
    end
  end
  for i = len, kept + 1, -1 do
    log[i] = nil
  end
  n, o = kept, 0
end
if REFUND then -- the newest entries first
  take_newest(log, cost)
  state, ttl = pack_state(log, 105), period
elseif total + cost <= limit then
  admitted, wait, remaining, reset, ttl = true, 0, limit - total - cost, period, period
  if not plain then
    if kept > 0 and log[kept - 1] == now then
      log[kept] = log[kept] + cost
    else
      log[kept + 1], log[kept + 2] = now, cost
    end
    state = pack_state(log, 105)
  elseif kept > 0 and log[n - 1] == now then -- the cost added to the newest entry
    if o == 0 then
      -- Its last 8 bytes. On the server's clock the key keeps its time to live (`ttl` false:
      -- no PEXPIRE): the newest entry was written in this millisecond of the server's, so
      -- every write since was too, and each gave the key the life it would get now.
      state, ttl = {#raw - 8, struct.pack('<d', log[n] + cost)}, not SERVER and period
    else
      state = 'i' .. string.sub(raw, 8 * o + 2, -9) .. struct.pack('<d', log[n] + cost)
    end
  elseif o == 0 then -- an entry appended
    state = {#raw, struct.pack('<dd', now, cost)}
  else
    state = 'i' .. string.sub(raw, 8 * o + 2) .. struct.pack('<dd', now, cost)
  end
elseif cost > limit then -- more than the strategy's capacity: never admitted
  admitted, wait, remaining, reset = false, period, 0, period
else -- now taken from a time before the period is added: exact for times and now >= 0
  local excess, freed = total + cost - limit, 0
  admitted, wait, remaining, reset = false, period, math.max(limit - total, 0), 0
  for i = o + 1, n, 2 do
    freed = freed + log[i + 1]
    if freed >= excess then
      wait = log[i] - now + period
      break
    end
  end
  if kept > 0 then
    reset = log[n - 1] - now + period
  end
end
