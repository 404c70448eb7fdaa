-- RedisBackend.increment_with_ttl (after _counter.lua). KEYS[1]: the counter. ARGV[1]: the
-- amount; ARGV[2]: the PX to give it, whole ms. Returns 'count|gone_in_ms' as a status reply
-- (one line: the cheapest reply for a client to parse).
return {ok = string.format('%d|%d', counter_add(KEYS[1], ARGV[1], ARGV[2]))}
