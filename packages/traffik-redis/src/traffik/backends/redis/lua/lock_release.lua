-- Release a lock only if it still holds our token.
-- KEYS[1]: the lock. ARGV[1]: the token. Returns 1 released, 0 gone (expired), -1 held by another.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
if holder then
  return -1
end
return 0
