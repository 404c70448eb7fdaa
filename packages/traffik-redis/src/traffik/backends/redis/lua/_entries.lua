-- Logs and queues of {time, amount} pairs, for the modules that keep them.

-- Takes `back` off the newest entries of a list of {time, amount} pairs (a log, a queue),
-- dropping each entry it empties: how refunds give units back to a log or a queue (defined
-- only when giving back).
local take_newest
if REFUND then
  function take_newest(entries, back)
    local n = #entries
    while n > 0 and back ~= 0 do
      local taken = min(entries[n], back)
      entries[n] = entries[n] - taken
      back = back - taken
      if entries[n] == 0 then
        entries[n], entries[n - 1] = nil, nil
        n = n - 2
      end
    end
  end
end
