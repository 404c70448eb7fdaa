-- Logs and queues of {time, amount} pairs, for the strategies that keep them.

-- Takes `back` off the newest entries of a list that ends with {time, amount} pairs (a log, or
-- a queue after its head: a list of pairs has an even length, a queue an odd one, so n > 1
-- holds while a pair is left), dropping each entry it empties: how refunds give units back
-- (defined only when giving back).
local take_newest
if REFUND then
  function take_newest(entries, back)
    local n = #entries
    while n > 1 and back ~= 0 do
      local taken = math.min(entries[n], back)
      entries[n] = entries[n] - taken
      back = back - taken
      if entries[n] == 0 then
        entries[n], entries[n - 1] = nil, nil
        n = n - 2
      end
    end
  end
end
