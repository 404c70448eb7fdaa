-- States of any size as lists of whole numbers (logs, queues, runs), for the strategies that
-- keep them, and for refunds, which give back to a state of any size only (decide.lua): a
-- mark (a byte, 'i'; 'h' for CostBasedTokenBucket's runs) then little-endian doubles.
-- PriorityQueue stores its log as 'q' instead (priority_queue.lua), and reads an 'i' state
-- here only to convert it; SlidingWindowLog and LeakyBucketWithQueue read their lists with
-- one struct call when deciding, and with load_state what that read leaves. A struct call reads or writes up to 4096 numbers (far below Lua's limit on results), with a
-- format cut from a literal up to 64 (cheaper than building it); up to 4 (most lists), with
-- no format to cut and no loop.
-- load_state and pack_state (_list_io.lua) are defined on the calls that use them: a refund
-- (below), and a decision that takes a general read or writes a list anew, where its body
-- names _list_io.lua (and scripts.py puts it in). Most decisions take a fast read instead
-- (and CostBasedTokenBucket's and PriorityQueue's write their states themselves), and a
-- function defined costs server time on every call (_prelude.lua): not a function that
-- defines them either.
-- The first `n` (1 to 4096) doubles stored in a value after its mark, in a table with the
-- position after them at n + 1, one struct call and no check, are
-- {struct.unpack(n <= 64 and string.sub(DOUBLES, 1, n + 1) or '<' .. string.rep('d', n), raw, 2)}.
local load_state, pack_state, DOUBLES = nil, nil,
  '<dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd'
if REFUND then
--[[ INCLUDE _list_io ]]
end
