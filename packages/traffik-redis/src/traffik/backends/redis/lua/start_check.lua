-- The start-up check (_access.py): every data command the programs and the backend run, each
-- through pcall on KEYS[1], a key of the backend's namespace, as the backend's user. Returns
-- each command that failed and its error, {command, error, ...} (empty: none failed); the
-- caller tells a refusal (the ACL, a command renamed away) from an error of the moment.
-- It leaves nothing behind: only SET and PSETEX make the key, each with a time to live of
-- 10 s; INCRBY, DECRBY and SETRANGE (which would make one without) run only once it exists;
-- UNLINK and DEL delete it. Run once per start (per primary on a cluster), never per decision.
local key, failed = KEYS[1], {}
local function try(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    failed[#failed + 1] = (...)
    failed[#failed + 1] = reply.err
    return false
  end
  return true
end
try('TIME')
local made = try('SET', key, '1', 'PX', '10000')
made = try('PSETEX', key, '10000', '1') and true or made
if made then
  try('INCRBY', key, '1')
  try('DECRBY', key, '1')
  try('SETRANGE', key, '0', '1')
end
try('GET', key)
try('GETRANGE', key, '0', '-1')
try('MGET', key)
try('PTTL', key)
try('PEXPIRE', key, '10000')
try('SCAN', '0', 'MATCH', key, 'COUNT', '1')
try('UNLINK', key)
try('DEL', key)
return failed
