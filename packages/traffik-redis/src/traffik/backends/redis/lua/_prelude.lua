-- The program's start: the call's arguments and the arithmetic. Mirrors
-- traffik.strategies.base: a strategy decides in whole numbers (time in ms, fractional
-- quantities scaled by the period), all below 2^53, which Lua's doubles hold exactly. Sums,
-- differences and products are then exact, and every division goes through floordiv or
-- ceildiv, which round like Python's // whatever the double quotient does. A state is stored
-- as 'i' ('h': CostBasedTokenBucket's runs) followed by little-endian doubles, each a whole
-- number, or as PriorityQueue's 'q' (records, then a block: priority_queue.lua); anything else
-- counts as no state (a fresh key), including the '#' states of the float-era scripts, whose
-- units differ.
-- Redis runs all of a program on every call, definitions included, and in this Lua every
-- operation costs the server time: a function definition or a table as much as twenty
-- arithmetic operations, a call to a function (math.max as much as floordiv) half that, and
-- a string the hashing of each of its bytes. So a program defines only what its strategies
-- use (scripts.py), constants are literals, the strategies are bodies in the entry's loop
-- (decide.lua), and these helpers call nothing (x - x % 1 is floor(x), exactly, for any
-- finite x).
if redis.replicate_commands then
  redis.replicate_commands()
end

-- The mode, now and the first item (decide.lua reads the others, and says what they are).
local MODE, now, code, limit, period, cost, x, y = struct.unpack('<BdBddddd', ARGV[1])
local REFUND = MODE == 114 -- 'r'

-- Python's a // b for whole numbers (b > 0, any sign of a): the floor of the double
-- quotient, checked against the exact products (it can be one off only near 2^53).
local function floordiv(a, b)
  local q = a / b
  q = q - q % 1
  if q * b > a then
    return q - 1
  end
  if (q + 1) * b <= a then
    return q + 1
  end
  return q
end

-- traffik.strategies.base.ceil_div: a / b rounded up (b > 0), -((-a) // b) as floordiv does it.
local function ceildiv(a, b)
  local q = -a / b
  q = q - q % 1
  if q * b > -a then
    return 1 - q
  end
  if (q + 1) * b <= -a then
    return -q - 1
  end
  return -q
end
