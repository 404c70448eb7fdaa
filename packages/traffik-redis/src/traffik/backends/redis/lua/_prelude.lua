-- The program's start: the call's arguments and the arithmetic. Mirrors
-- traffik.strategies.base: a strategy decides in whole numbers (time in ms, fractional
-- quantities scaled by the period), all below 2^53, which Lua's doubles hold exactly. Sums,
-- differences and products are then exact, and every division goes through floordiv
-- (_floordiv.lua, after this file in a program that calls it), which rounds like Python's //
-- whatever the double quotient does; rounded up (traffik.strategies.base.ceil_div), a / b is
-- -floordiv(-a, b), as Python's -((-a) // b): no second function to define on every call. A
-- state is stored as 'i' ('h': CostBasedTokenBucket's runs) followed by little-endian
-- doubles, each a whole number, or as PriorityQueue's 'q' (records, then a block:
-- priority_queue.lua); anything else counts as no state (a fresh key), including the '#'
-- states of the float-era scripts, whose units differ.
-- Redis runs all of a program on every call, definitions included, and in this Lua every
-- operation costs the server time: a function definition or a table as much as twenty
-- arithmetic operations, a call to a function (math.max as much as floordiv) half that, and
-- a string the hashing of each of its bytes (measured on Redis 7.0 as it runs a decision: a
-- function defined costs 0.1-0.2 us, 1-2% of a decision, and its calls more). So a program
-- defines only what its strategies use (scripts.py), constants are literals, the strategies
-- are bodies in the entry's loop (decide.lua), and floordiv calls nothing (x - x % 1 is
-- floor(x), exactly, for any finite x).
if redis.replicate_commands then
  redis.replicate_commands()
end

-- The mode, now and the first item (decide.lua reads the others, and says what they are).
local MODE, now, code, limit, period, cost, x, y = struct.unpack('<BdBddddd', ARGV[1])
local REFUND = MODE == 114 -- 'r'
