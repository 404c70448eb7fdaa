-- PriorityQueue (traffik.strategies.priority). The log {t1, p1, c1, t2, p2, c2, ...}, oldest
-- first; x: the priority decided at, y: the most entries kept.
-- Redis's Lua hashes every byte of every string it makes (a GET reply too), struct.pack adds
-- bytes one by one, and a command costs about a tenth of a decision, more with numbers for
-- arguments (Redis prints them). So the log is stored to be read and written in ranges, few
-- bytes through Lua, whatever its length: 'q', the records ('<dBd': time, priority, cost;
-- priority 0: an entry that left), then a block of 189 bytes that a decision reads with one
-- GETRANGE (literal offsets) and writes with one SETRANGE, after the record it appends:
--   the front: 4 slots of 17 bytes, of which f + 1 .. f + k hold the oldest records;
--   then ('<dddddddddddddddB'): the total cost of the entries at each priority (s1..s4), the
--   newest entry's cost and time (nc, nt), the number of entries at each priority (n1..n4),
--   the oldest entry's time (ot), np * 256 + f * 16 + k (np: the newest entry's priority),
--   newest, where the newest entry lies when after the front, head and stop, where the
--   records after the front lie (offsets in the value, from 0), and 'q'.
--   What a hit added to the newest entry changes (its cost, s1..s4, nc) follows the front,
--   written from the newest's cost on: 116 bytes.
-- The block holds what a decision counts. The entries are in time order, so those that left
-- the window lead: while the oldest is inside it no record is read; the others leave the
-- front (f moves on), which takes the next 4 records when used up (a GETRANGE per 4 entries
-- out). An admitted hit appends its record (or adds its cost to the newest entry, same time
-- and priority). Past y entries, the oldest of the lowest priority leaves: the oldest of all
-- when of that priority, else one found further in by its priority byte and marked left, as
-- are the entries a refund takes all of (from the newest back). `state` is a table of offsets
-- and bytes for SETRANGE (decide.lua), or the value written anew: when no entry is left, and
-- when the bytes before head outgrow the entries (read once then).
-- The general path reads the whole log as a list and decides as Python does, for what is
-- rare: a clock gone back (the times would be out of order), entries to evict beyond one (y
-- made smaller), records marked left outgrowing the entries, and the states of the scripts
-- before 'q' ('i', _lists.lua; of any content, as from elsewhere), which it converts. It
-- stores 'q' when the log fits it, else 'i': 'q' holds priorities 1 to 4 and costs >= 0
-- totalling at most 2^52, so the block's sums are exact (each admission keeps its priority's
-- sum within the limit, below 2^50). The scripts before 'q' read a 'q' state as a fresh key
-- (as CostBasedTokenBucket's 'h'), over a rolling deploy.
local key, log, raw = KEYS[i], nil, nil
local block = redis.pcall('GETRANGE', key, '-189', '-1')
if block.err then -- another type at the key (WRONGTYPE): no state, written anew
  if block.err:sub(1, 9) ~= 'WRONGTYPE' then -- any other error (an ACL refusal): the script's
    error(block)
  end
  block = ''
end
local s1, s2, s3, s4, nc, nt, n1, n2, n3, n4, ot, small, newest, head, stop, mark
if #block == 189 then
  s1, s2, s3, s4, nc, nt, n1, n2, n3, n4, ot, small, newest, head, stop, mark =
    struct.unpack('<dddddddddddddddB', block, 69)
end
-- Ours ('q', its offsets in whole records and within a string's size), else no state.
local counted = mark == 113 and head >= 1 and head <= stop and stop < 2 ^ 29
  and (head - 1) % 17 == 0 and (stop - 1) % 17 == 0 and small >= 0 and small < 1280
  and (x <= 1 and s1 or 0) + (x <= 2 and s2 or 0) + (x <= 3 and s3 or 0) + s4
-- The common decision first, in few operations (each costs): admitted with nothing leaving
-- (the oldest entry inside the window, fewer than y entries), the newest entry no later than
-- now and the last record before the block; its record appended, or its cost added to it.
-- Added to it on the server's clock, the key keeps its time to live (`ttl` false: no
-- PEXPIRE, a command's cost): that entry was written in this millisecond of the server's, so
-- every write since was too, and each gave the key the life it would get now, `period` from
-- this millisecond.
-- A newest entry later than now (written by a host whose clock is ahead): decided at its time
-- (decide.lua); from further ahead, no state (base.dated: an empty log, on the general path).
local future = false
if counted and n1 + n2 + n3 + n4 > 0 and nt > now + 60000 then
  counted, future = false, true
elseif counted and n1 + n2 + n3 + n4 > 0 and nt > now then
  now = nt
end
local hot = counted and not REFUND and counted + cost <= limit and ot > now - period
  and n1 + n2 + n3 + n4 < y and head < stop and newest + 17 == stop and nt <= now
  and (x == 1 or x == 2 or x == 3 or x == 4)
local stored, general = hot, false
if not hot then
  stored = counted and true
  if future then
    log, stored = {}, true
  elseif not stored then -- 'i' (the range is all of it when shorter), else no state
    raw = #block < 189 and block or redis.call('GET', key)
--[[ INCLUDE _list_io ]]
    log = load_state(raw, 105)
    local newest = log and #log >= 3 and log[#log - #log % 3 - 2]
    if newest and newest > now + 60000 then -- from further ahead: an empty log (base.dated)
      log = {}
    elseif newest and newest > now then -- the last entry's time
      now = newest
    end
    stored = log ~= nil
  end
  general = log ~= nil or not (x == 1 or x == 2 or x == 3 or x == 4) or y < 1
end
if hot then
  admitted, wait, remaining, reset, ttl = true, 0, limit - counted - cost, period, period
  if x == 1 then
    s1 = s1 + cost
  elseif x == 2 then
    s2 = s2 + cost
  elseif x == 3 then
    s3 = s3 + cost
  else
    s4 = s4 + cost
  end
  if nt == now and small - small % 256 == 256 * x then -- the newest takes the cost
    nc, ttl = nc + cost, not SERVER and period
    state = {stop - 8, struct.pack('<dc68ddddd', nc, block, s1, s2, s3, s4, nc)}
  else -- its record appended, the block after it
    if x == 1 then
      n1 = n1 + 1
    elseif x == 2 then
      n2 = n2 + 1
    elseif x == 3 then
      n3 = n3 + 1
    else
      n4 = n4 + 1
    end
    state = {stop, struct.pack('<dBdc68dddddddddddddddB', now, x, cost, block, s1, s2, s3, s4,
      cost, now, n1, n2, n3, n4, ot, small % 256 + 256 * x, stop, head, stop + 17, 113)}
  end
elseif REFUND and not stored then -- nothing to give back to
  general = false
elseif not general then
  -- ns[p], ns[p + 4]: the entries and cost of priority p; the front, block's first 68 bytes
  -- (struct.pack takes them from it whole), holds k records from its slot f (from 0).
  local n, start, front, f, k, np, ns = 0, now - period, block
  if stored then
    ns, n, k = {n1, n2, n3, n4, s1, s2, s3, s4}, n1 + n2 + n3 + n4, small % 16
    f, np = (small % 256 - k) / 16, (small - small % 256) / 256
    if n > 0 and nt <= start then -- the newest left the window: all of them
      n = 0
    end
  end
  counted = n > 0 and counted or 0
  -- oldest(): the oldest entry (time, priority, cost), the front's slot f after the records
  -- marked left, the front taking the next 4 records when used up (there must be one).
  -- Defined only where it may be wanted: entries out of the window, some to evict, a refusal.
  local oldest
  if n > 0 and (ot <= start or n >= y or counted + cost > limit) then
    oldest = function()
      while true do
        if k == 0 then
          local size = stop - head < 68 and stop - head or 68
          front = redis.call('GETRANGE', key, head, head + size - 1)
          head, f, k = head + size, 0, size / 17
        end
        local t, p, c = struct.unpack('<dBd', front, 17 * f + 1)
        if p ~= 0 then
          return t, p, c
        end
        f, k = f + 1, k - 1
      end
    end
    -- PriorityQueue._log: the entries out of the window lead; they leave the front.
    while n > 0 and ot <= start do
      local _, p, c = oldest()
      ns[p], ns[p + 4], n, f, k = ns[p] - 1, ns[p + 4] - c, n - 1, f + 1, k - 1
      if n > 0 then
        ot = oldest()
      end
    end
    counted = (x <= 1 and ns[5] or 0) + (x <= 2 and ns[6] or 0) + (x <= 3 and ns[7] or 0) + ns[8]
  end
  local based = n > 0 -- else the value is written anew
  if not based then
    ns, head, stop, newest, f, k = {0, 0, 0, 0, 0, 0, 0, 0}, 1, 1, 1, 0, 0
    ot, nt, np, nc = 0, 0, 0, 0
  end
  -- The records scans read: buf holds the value's bytes from offset `at` on. What is
  -- written: the record (rt, rp, rc) at stop - 17 with the block after it (none: the block
  -- at stop), and offsets and bytes in `patch`.
  local buf, at, chunk, patch, rt, rp, rc = '', 0, 8, nil
  if REFUND then -- the newest entries of this priority give back first
    -- From the newest back: the records after the front (from `newest`), then the front's.
    -- An entry given all back is marked left (`gone`: such records after the front); the
    -- first entry still there is the newest.
    local back, pos, s, found = cost, head < stop and newest or head - 17, f + k - 1, not based
    local gone, moved = nil, false -- moved: an entry left at the oldest time (the oldest, maybe)
    while (back ~= 0 or not found) and (pos >= head or s >= f) do
      local t, p, c
      if pos >= head then
        if pos < at or pos + 17 > at + #buf then
          local first = pos + 17 - 17 * chunk
          at = first < head and head or first
          buf, chunk = redis.call('GETRANGE', key, at, pos + 16), 2 * chunk
        end
        t, p, c = struct.unpack('<dBd', buf, pos - at + 1)
      else
        t, p, c = struct.unpack('<dBd', front, 17 * s + 1)
      end
      if p == x and back ~= 0 then
        local taken = c < back and c or back
        back, c, ns[x + 4] = back - taken, c - taken, ns[x + 4] - taken
        if c == 0 then -- spent (a cost of 0 too): it leaves
          ns[x], n, p, gone, moved = ns[x] - 1, n - 1, 0, gone or {}, moved or t == ot
          gone[pos] = true
        end
        if pos >= head and pos + 17 == stop then -- the last record: written with the block
          rt, rp, rc = t, p, c
        elseif pos >= head then
          patch = patch or {}
          patch[#patch + 1] = pos + 8
          patch[#patch + 1] = struct.pack('<Bd', p, c)
        else
          front = string.sub(front, 1, 17 * s + 8) .. struct.pack('<Bd', p, c)
            .. string.sub(front, 17 * s + 18)
        end
      end
      if p ~= 0 and not found then
        found, nt, np, nc = true, t, p, c
        if pos >= head then
          newest = pos
        else -- none left after the front
          head, newest = stop, stop
        end
      end
      if pos >= head then
        pos = pos - 17
      else
        s = s - 1
      end
    end
    if moved and n > 0 then -- the oldest is the first entry still there
      local first = nil
      for slot = f, f + k - 1 do
        local t, p = struct.unpack('<dB', front, 17 * slot + 1)
        if p ~= 0 then
          first = t
          break
        end
      end
      pos, buf, at = head, '', 0
      while first == nil do -- one after the front there is
        if pos + 17 > at + #buf then
          at, buf = pos, redis.call('GETRANGE', key, pos, pos + 17 * chunk - 1)
          chunk = 2 * chunk
        end
        local t, p = struct.unpack('<dB', buf, pos - at + 1)
        if p ~= 0 and gone[pos] == nil then
          first = t
        end
        pos = pos + 17
      end
      ot = first
    end
    if n == 0 then -- none left: the value anew
      based, head, stop, newest, f, k, ot, nt, np, nc, rt = false, 1, 1, 1, 0, 0, 0, 0, 0, 0, nil
      ns, patch = {0, 0, 0, 0, 0, 0, 0, 0}, nil
    end
    ttl = period
  elseif cost > limit then
    admitted, wait, remaining, reset = false, period, 0, period
  elseif counted + cost <= limit then
    admitted, wait, remaining, reset = true, 0, limit - counted - cost, period
    if based and nt > now then -- the clock went back: the times would not be in order
      general = true
    elseif based and nt == now and np == x then -- the newest takes the cost
      nc, ns[x + 4] = nc + cost, ns[x + 4] + cost
      if n > y then -- some to evict (y made smaller): rare
        general = true
      elseif head == stop then -- in the front: its last entry
        local s = f + k - 1
        while string.byte(front, 17 * s + 9) == 0 do
          s = s - 1
        end
        front = string.sub(front, 1, 17 * s + 9) .. struct.pack('<d', nc)
          .. string.sub(front, 17 * s + 18)
      elseif newest + 17 == stop then
        rt, rp, rc = now, x, nc
      else
        patch = {newest + 9, struct.pack('<d', nc)}
      end
    elseif n + 1 > y + 1 then -- more than one to evict (y made smaller): rare
      general = true
    else
      local kept = true
      if n + 1 > y then -- one leaves: the oldest of the lowest priority, the new entry's too
        local lowest = ns[1] > 0 and 1 or ns[2] > 0 and 2 or ns[3] > 0 and 3 or 4
        lowest = x < lowest and x or lowest
        local t, p, c = oldest()
        if p == lowest then -- the oldest of all: the next is the oldest (the new at the latest)
          ns[p], ns[p + 4], n, f, k = ns[p] - 1, ns[p + 4] - c, n - 1, f + 1, k - 1
          ot = n > 0 and oldest() or now
        else -- further in: marked left where found by its priority byte
          local s, pos = f + 1, nil
          while s < f + k and string.byte(front, 17 * s + 9) ~= lowest do
            s = s + 1
          end
          if s == f + k then -- not in the front: in the records after it
            pos = head
            while pos < stop do
              if pos + 17 > at + #buf then
                at, buf = pos, redis.call('GETRANGE', key, pos, pos + 17 * chunk - 1)
                chunk = 2 * chunk
              end
              if string.byte(buf, pos - at + 9) == lowest then
                break
              end
              pos = pos + 17
            end
          end
          if s < f + k then
            t, p, c = struct.unpack('<dBd', front, 17 * s + 1)
            front = string.sub(front, 1, 17 * s + 8) .. '\0' .. string.sub(front, 17 * s + 10)
            ns[lowest], ns[lowest + 4], n = ns[lowest] - 1, ns[lowest + 4] - c, n - 1
          elseif pos < stop then
            t, p, c = struct.unpack('<dBd', buf, pos - at + 1)
            patch = {pos + 8, '\0'}
            ns[lowest], ns[lowest + 4], n = ns[lowest] - 1, ns[lowest + 4] - c, n - 1
          else -- none before the new entry: it leaves itself
            kept = false
          end
        end
      end
      if kept then
        ns[x], ns[x + 4], n, nt, np, nc = ns[x] + 1, ns[x + 4] + cost, n + 1, now, x, cost
        if based then
          newest, stop, rt, rp, rc = stop, stop + 17, now, x, cost
        else -- the only entry, in the front (the rest of it any bytes)
          front = struct.pack('<dBddBddBddBd', now, x, cost, 0, 0, 0, 0, 0, 0, 0, 0, 0)
          k, ot = 1, now
        end
      end
    end
    ttl = period
  else
    -- Refused: it waits until the oldest entries it counts free the excess (the front's,
    -- then the records after it), and the newest it counts sets the reset; every scan stops
    -- at the first records that answer.
    local excess, freed = counted + cost - limit, 0
    admitted, wait, remaining, reset = false, period, math.max(limit - counted, 0), 0
    if (x <= 1 and ns[1] or 0) + (x <= 2 and ns[2] or 0) + (x <= 3 and ns[3] or 0) + ns[4] > 0 then
      local t, p, c = oldest()
      local s, pos = f, head
      while true do
        if p >= x then
          freed = freed + c
          if freed >= excess then
            wait = t + period - now
            break
          end
        end
        s = s + 1
        if s < f + k then
          t, p, c = struct.unpack('<dBd', front, 17 * s + 1)
        elseif pos < stop then
          if pos + 17 > at + #buf then
            at, buf = pos, redis.call('GETRANGE', key, pos, pos + 17 * chunk - 1)
            chunk = 2 * chunk
          end
          t, p, c = struct.unpack('<dBd', buf, pos - at + 1)
          pos = pos + 17
        else
          break
        end
      end
      t = nt
      if np < x then -- an earlier entry it counts (there is one)
        pos, t = head < stop and newest - 17 or head - 17, nil
        while pos >= head do
          if pos < at or pos + 17 > at + #buf then
            local first = pos + 17 - 17 * chunk
            at = first < head and head or first
            buf, chunk = redis.call('GETRANGE', key, at, pos + 16), 2 * chunk
          end
          if string.byte(buf, pos - at + 9) >= x then
            t = struct.unpack('<d', buf, pos - at + 1)
            break
          end
          pos = pos - 17
        end
        s = f + k - 1
        while t == nil do
          t, p = struct.unpack('<dB', front, 17 * s + 1)
          t, s = p >= x and t or nil, s - 1
        end
      end
      reset = t + period - now
    end
  end
  -- The block after the changes. The value anew when it has no entries from before, or when
  -- the bytes before head outgrow the records (read whole then, with no other change
  -- pending); the general path when the records marked left do.
  if (REFUND or admitted) and not general then
    local small, moved = np * 256 + f * 16 + k, ''
    if based and not patch and head > stop - head + 2048 then -- the records move up
      local last = rt and stop - 17 or stop -- the record written at stop - 17 is not read
      moved = redis.call('GETRANGE', key, head, last - 1)
        .. (rt and struct.pack('<dBd', rt, rp, rc) or '')
      head, stop, newest, based = 1, stop - head + 1, newest - head + 1, false
    elseif based and stop - head > 34 * n + 2048 then
      general = true
    end
    if #front < 68 then -- a front read short, or changed: any bytes after its records
      front = front .. struct.pack('<dBddBddBddBd', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    end
    if general then
      state = nil
    elseif not based then
      state = 'q' .. moved .. struct.pack('<c68dddddddddddddddB', front, ns[5], ns[6], ns[7],
        ns[8], nc, nt, ns[1], ns[2], ns[3], ns[4], ot, small, newest, head, stop, 113)
    elseif rt then
      patch = patch or {}
      patch[#patch + 1] = stop - 17
      patch[#patch + 1] = struct.pack('<dBdc68dddddddddddddddB', rt, rp, rc, front, ns[5],
        ns[6], ns[7], ns[8], nc, nt, ns[1], ns[2], ns[3], ns[4], ot, small, newest, head, stop, 113)
      state = patch
    else
      patch = patch or {}
      patch[#patch + 1] = stop
      patch[#patch + 1] = struct.pack('<c68dddddddddddddddB', front, ns[5], ns[6], ns[7], ns[8],
        nc, nt, ns[1], ns[2], ns[3], ns[4], ot, small, newest, head, stop, 113)
      state = patch
    end
  end
end

if general then
  -- The general path: the log as a list, every entry read as PriorityQueue does.
  if log == nil then
    log = {}
    if stored then -- 'q': the front's entries, then those after it, 1000 per struct call
      raw = redis.call('GET', key)
      local front, _, _, _, _, _, _, _, _, _, _, _, small, _, first, stop =
        struct.unpack('<c68ddddddddddddddd', raw, #raw - 188)
      local kept, k = 0, small % 16
      local f = (small % 256 - k) / 16
      for s = f, f + k - 1 do
        local t, p, c = struct.unpack('<dBd', front, 17 * s + 1)
        if p ~= 0 then
          log[kept + 1], log[kept + 2], log[kept + 3] = t, p, c
          kept = kept + 3
        end
      end
      local n, pos = (stop - first) / 17, first + 1
      for done = 0, n - 1, 1000 do
        local m = n - done < 1000 and n - done or 1000
        local values = {struct.unpack('<' .. string.rep('dBd', m), raw, pos)}
        pos = values[3 * m + 1]
        for j = 1, 3 * m, 3 do
          if values[j + 1] ~= 0 then
            log[kept + 1], log[kept + 2], log[kept + 3] = values[j], values[j + 1], values[j + 2]
            kept = kept + 3
          end
        end
      end
    end
  end
  -- PriorityQueue._log: the entries still inside the window, kept in the table (no copy);
  -- with what they count at this priority, and where the oldest of the lowest is.
  local start, kept, counted, lowest, first = now - period, 0, 0
  local len = #log
  for j = 1, len - 2, 3 do
    local t = log[j]
    if t > start then
      local p, c = log[j + 1], log[j + 2]
      log[kept + 1], log[kept + 2], log[kept + 3] = t, p, c
      if lowest == nil or p < lowest then
        lowest, first = p, kept + 1
      end
      if p >= x then
        counted = counted + c
      end
      kept = kept + 3
    end
  end
  for j = len, kept + 1, -1 do
    log[j] = nil
  end
  state, ttl = nil, nil
  if REFUND then -- the newest entries of this priority give back first
    local back, j = cost, kept - 2
    while j >= 1 and back ~= 0 do
      if log[j + 1] == x then
        local taken = math.min(log[j + 2], back)
        log[j + 2] = log[j + 2] - taken
        back = back - taken
        if log[j + 2] == 0 then
          table.remove(log, j)
          table.remove(log, j)
          table.remove(log, j)
        end
      end
      j = j - 3
    end
    state = true
  elseif cost > limit then
    admitted, wait, remaining, reset = false, period, 0, period
  elseif counted + cost <= limit then
    if kept > 0 and log[kept - 2] == now and log[kept - 1] == x then
      log[kept] = log[kept] + cost
    else
      log[kept + 1], log[kept + 2], log[kept + 3] = now, x, cost
      if lowest == nil or x < lowest then
        lowest, first = x, kept + 1
      end
      kept = kept + 3
    end
    while kept > 3 * y do -- the oldest entry of the lowest priority leaves
      if first == nil then
        for j = 1, kept, 3 do
          if lowest == nil or log[j + 1] < lowest then
            lowest, first = log[j + 1], j
          end
        end
      end
      table.remove(log, first)
      table.remove(log, first)
      table.remove(log, first)
      kept, lowest, first = kept - 3, nil, nil
    end
    admitted, wait, remaining, reset = true, 0, limit - counted - cost, period
    state = true
  else
    local excess, freed, newest = counted + cost - limit, 0, nil
    admitted, wait, remaining, reset = false, period, math.max(limit - counted, 0), 0
    for j = 1, kept, 3 do
      if log[j + 1] >= x then
        newest = log[j]
        if freed < excess then
          freed = freed + log[j + 2]
          if freed >= excess then
            wait = log[j] + period - now
          end
        end
      end
    end
    if newest ~= nil then
      reset = newest + period - now
    end
  end
  if state then
    -- 'q' when the log fits it (see the top), written whole (its first 4 entries in the
    -- front); else 'i'.
    local n, sums, fits, previous = #log, {0, 0, 0, 0, 0, 0, 0, 0}, true, nil
    for j = 1, n, 3 do
      local t, p, c = log[j], log[j + 1], log[j + 2]
      if not (p == 1 or p == 2 or p == 3 or p == 4) or c < 0 or previous and t < previous then
        fits = false
        break
      end
      sums[p], sums[p + 4], previous = sums[p] + 1, sums[p + 4] + c, t
    end
    if fits and sums[5] + sums[6] + sums[7] + sums[8] <= 2 ^ 52 then
      local k = n < 12 and n / 3 or 4
      local parts = {'q'}
      for j = 3 * k + 1, n, 3000 do
        local last = j + 2999 < n and j + 2999 or n
        parts[#parts + 1] = struct.pack('<' .. string.rep('dBd', (last - j + 1) / 3),
          unpack(log, j, last))
      end
      local stop = 1 + 17 * (n / 3 - k)
      parts[#parts + 1] = struct.pack('<c68dddddddddddddddB',
        struct.pack('<' .. string.rep('dBd', k), unpack(log, 1, 3 * k)) .. string.rep('\0', 68),
        sums[5], sums[6], sums[7], sums[8], log[n] or 0, log[n - 2] or 0, sums[1], sums[2],
        sums[3], sums[4], log[1] or 0, (log[n - 1] or 0) * 256 + k, stop > 1 and stop - 17 or 1,
        1, stop, 113)
      state = table.concat(parts)
    else
--[[ INCLUDE _list_io ]]
      state = pack_state(log, 105)
    end
    ttl = period
  end
end
