-- INCRBY, and a time to live whenever the key has none (new, or made immortal elsewhere).
-- KEYS[1]: the counter. ARGV[1]: amount; ARGV[2]: the PX to give it, whole ms.
-- Returns 'count|gone_in_ms' as a status reply (one line: the cheapest reply for a client to
-- parse): Redis keeps a key through the millisecond of its expiry, so it is gone PTTL + 1 ms
-- from now.
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
local pttl = redis.call('PTTL', KEYS[1])
if pttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  pttl = tonumber(ARGV[2])
end
return {ok = string.format('%d|%d', count, pttl + 1)}
