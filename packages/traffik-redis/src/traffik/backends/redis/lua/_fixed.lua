-- States of a fixed size, for the strategies that keep them: read with one struct call and no
-- table, written by the strategies with struct.pack and the same format ('<c' then a 'd' per
-- number, the 'c' being 'i').

-- The numbers of the state stored as `raw` (a GET reply) in `format`, two to six of them
-- (and then the numbers past them are not the state's); nothing when `raw` is not such a
-- state (missing, another size, a number not whole or not below 2^53), which every strategy
-- with a state of a fixed size reads as a fresh key. A number is whole when its `% 1` is 0,
-- which NaN's and the infinities' never are; the parts are never negative, so their sum is 0
-- only when each is.
local function numbers(raw, format)
  local size = #format - 2
  if raw and #raw == 8 * size + 1 then
    local mark, a, b, c, d, e, f = struct.unpack(format, raw)
    if
      mark == 'i'
      and a % 1 + b % 1 == 0
      and a > -2 ^ 53 and a < 2 ^ 53
      and b > -2 ^ 53 and b < 2 ^ 53
      and (size < 3 or c % 1 == 0 and c > -2 ^ 53 and c < 2 ^ 53)
      and (size < 4 or d % 1 == 0 and d > -2 ^ 53 and d < 2 ^ 53)
      and (size < 5 or e % 1 == 0 and e > -2 ^ 53 and e < 2 ^ 53)
      and (size < 6 or f % 1 == 0 and f > -2 ^ 53 and f < 2 ^ 53)
    then
      return a, b, c, d, e, f
    end
  end
end
