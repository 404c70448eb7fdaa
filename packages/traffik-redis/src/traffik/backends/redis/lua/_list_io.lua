-- load_state and pack_state (declared in _lists.lua), defined where a body needs them
-- (scripts.py puts this file there), unless defined already.
if not load_state then
  -- The list stored as `raw` (a GET reply) under `mark`, or nil when missing, under another
  -- mark or not ours (a number not whole or not below 2^53: NaN and the infinities fail the
  -- `% 1` test).
  function load_state(raw, mark)
    if not raw then
      return nil
    end
    local n = (#raw - 1) / 8
    if n % 1 ~= 0 or string.byte(raw, 1) ~= mark then
      return nil
    end
    if n <= 4 then -- most lists: one struct call, no format to cut, no loop
      local a, b, c, d = struct.unpack(n == 4 and '<dddd' or n == 3 and '<ddd' or n == 2 and '<dd'
        or n == 1 and '<d' or '<', raw, 2)
      if
        (n < 1 or a % 1 == 0 and a > -2 ^ 53 and a < 2 ^ 53)
        and (n < 2 or b % 1 == 0 and b > -2 ^ 53 and b < 2 ^ 53)
        and (n < 3 or c % 1 == 0 and c > -2 ^ 53 and c < 2 ^ 53)
        and (n < 4 or d % 1 == 0 and d > -2 ^ 53 and d < 2 ^ 53)
      then
        local state = {a, b, c, d}
        if n < 4 then
          state[n + 1] = nil -- the position after the numbers
        end
        return state
      end
      return nil
    end
    local head = n < 4096 and n or 4096
    local state = {struct.unpack(head <= 64 and string.sub(DOUBLES, 1, head + 1)
      or '<' .. string.rep('d', head), raw, 2)}
    local pos = state[head + 1]
    state[head + 1] = nil
    for first = 4097, n, 4096 do -- very long lists only
      local count = n - first + 1 < 4096 and n - first + 1 or 4096
      local values = {struct.unpack('<' .. string.rep('d', count), raw, pos)}
      pos = values[count + 1]
      for i = 1, count do
        state[first + i - 1] = values[i]
      end
    end
    for i = 1, n do
      local v = state[i]
      if v % 1 ~= 0 or v <= -2 ^ 53 or v >= 2 ^ 53 then
        return nil
      end
    end
    return state
  end

  -- A list of whole numbers as the value to store under `mark` (what load_state reads back).
  function pack_state(state, mark)
    local n = #state
    if n <= 4 then -- most lists: no format to cut
      local format = n == 4 and '<Bdddd' or n == 3 and '<Bddd' or n == 2 and '<Bdd'
        or n == 1 and '<Bd' or '<B'
      return struct.pack(format, mark, state[1], state[2], state[3], state[4])
    end
    local head = n < 4096 and n or 4096
    local format = '<Bdddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd'
    if n <= 64 then
      format = string.sub(format, 1, n + 2)
    else
      format = '<B' .. string.rep('d', head)
    end
    local raw = struct.pack(format, mark, unpack(state, 1, head))
    for first = 4097, n, 4096 do -- very long lists only
      local last = first + 4095 < n and first + 4095 or n
      raw = raw .. struct.pack('<' .. string.rep('d', last - first + 1), unpack(state, first, last))
    end
    return raw
  end
end
