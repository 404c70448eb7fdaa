"""The Lua scripts (`lua/*.lua`): how they are put together, their SHA1s, loading and running them.

Every decision and refund runs a program: the prelude (`_prelude.lua`: the call's arguments
and the arithmetic), FixedWindow's counter (`_counter.lua`, `fixed_window.lua`) when the call
has counters, `_lists.lua` and the helper files its strategies need, and the entry
(`decide.lua`) with, in its loop, the body of each strategy it holds: one Lua file per
strategy (`lua/<script>.lua`, giving back within), each written once. Redis runs all of a
program on every call, definitions included, and every definition costs server time (see
`_prelude.lua`): so a program holds what a call needs and no more (one program per strategy,
with or without the counter, the counter alone, and `decide` with everything for calls that
mix strategies), a strategy is a body rather than a function to define and call, the parts
bodies share are put in their text (`--[[ INCLUDE part ]]`, `numbers(raw, format)`), and what
only refunds or a list's general read use is defined only on the calls that need it. For the same reason
`increment_with_ttl` is its own script, the counter's INCRBY and nothing else.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from collections.abc import Awaitable, Sequence
from importlib import resources
from typing import Any

from traffik.strategies.base import EXACT_LIMIT

__all__ = [
    "COUNTER",
    "EVERY_SCRIPT",
    "PROGRAMS",
    "SCRIPTS",
    "STRATEGY_SCRIPTS",
    "Script",
    "decode_state",
    "evalsha",
    "load_all",
    "with_counter",
]

COUNTER = "fixed_window"
"""FixedWindow's counter (code 0): its Lua file, and the program that runs it alone."""
_COUNTER_PARTS = ("_counter", COUNTER)

STRATEGY_SCRIPTS = (
    "sliding_window_counter",
    "sliding_window_log",
    "token_bucket",
    "leaky_bucket",
    "leaky_bucket_with_queue",
    "gcra",
    "tiered_rate",
    "adaptive_throttle",
    "priority_queue",
    "quota_with_rollover",
    "cost_based_token_bucket",
    "time_of_day",
)
"""The state strategies (`StateStrategy.script`) in code order: a strategy's code is its place
here, from 1, and its Lua file `lua/<script>.lua`."""

_HELPERS = {
    "sliding_window_log": ("_entries",),
    "leaky_bucket_with_queue": ("_entries",),
}
"""Helper files a strategy needs besides the prelude and `_lists`; a program reads each once,
before its strategies."""

_FLOORDIV = re.compile(r"\bfloordiv\(")
"""A call of floordiv (`lua/_floordiv.lua`, in the programs that make one: a function defined
costs server time on every call, used or not, see `lua/_prelude.lua`)."""

_STRATEGIES = "--[[ STRATEGIES ]]"
"""Where the entry (`lua/decide.lua`) takes the bodies of a program's strategies."""

EVERY_SCRIPT = "decide"
"""The program with every strategy and the counter."""

_STATE_MARK = b"i"
_RUNS_MARK = b"h"
"""CostBasedTokenBucket's states: its cost history as runs (`lua/cost_based_token_bucket.lua`)."""
_QUEUE_MARK = b"q"
_QUEUE_BLOCK = struct.Struct("<68s15dB")
_QUEUE_RECORD = struct.Struct("<dBd")
"""PriorityQueue's states: `q`, its log as records of (time, priority, cost), then a block
(`lua/priority_queue.lua`)."""
_QUEUE_CODE = 9
assert STRATEGY_SCRIPTS.index("priority_queue") + 1 == _QUEUE_CODE  # lua/decide.lua names it


def _read(name: str) -> str:
    return (
        resources.files(__package__)
        .joinpath("lua")
        .joinpath(f"{name}.lua")
        .read_text(encoding="utf-8")
    )


_INCLUDE = re.compile(r"^--\[\[ INCLUDE (\w+) \]\]$", re.MULTILINE)
"""A line of a strategy's body that stands for a part several bodies share (`lua/<part>.lua`,
put there when the program is built: still a body, nothing defined or called at run time)."""


_NUMBERS = re.compile(
    r"^(?P<indent> *)(?P<local>local )?(?P<names>\w+(?:, \w+)+) = "
    r"numbers\(raw, '<c(?P<doubles>d{2,6})'\)$",
    re.MULTILINE,
)
"""A line of a body that reads a state of a fixed size, `a, b, ... = numbers(raw, '<cdd...')`
(two to six numbers, a name for each), put in as the read itself (`_numbers`): a function
would cost its definition and its call on every call of the program (`lua/_prelude.lua`)."""


def _numbers(found: re.Match[str]) -> str:
    """The read a `numbers(raw, format)` line stands for: the names get the numbers of the
    state stored as `raw` (a GET reply) in `format`, `i` then little-endian doubles (as the
    strategies write it, with struct.pack and that format); nil when `raw` is not such a
    state (missing, another size or mark, a number not whole or not below 2**53), which every
    strategy with a state of a fixed size reads as a fresh key. A number is whole when its
    `% 1` is 0, which NaN's and the infinities' never are; the parts are never negative, so
    their sum is 0 only when each is."""
    names, size = found["names"], len(found["doubles"])
    if len(names.split(", ")) != size:
        raise ValueError(f"{found[0].strip()!r}: one name per number of the format")
    values = [f"v{place}" for place in range(1, size + 1)]
    lines = [
        f"{found['local'] or ''}{names} = nil",
        f"if raw and #raw == {8 * size + 1} then",
        f"  local mark, {', '.join(values)} = struct.unpack('<c{found['doubles']}', raw)",
        f"  if mark == 'i' and {' + '.join(f'{v} % 1' for v in values)} == 0",
        *(f"    and {v} > -2 ^ 53 and {v} < 2 ^ 53" for v in values),
        "  then",
        f"    {names} = {', '.join(values)}",
        "  end",
        "end",
    ]
    return "\n".join(found["indent"] + line for line in lines)


def _body(strategy: str) -> str:
    """A strategy's body (`lua/<strategy>.lua`) with the parts it includes put in (and the
    parts those include), and its reads of states of a fixed size (`_NUMBERS`)."""
    text = _INCLUDE.sub(lambda found: _body(found.group(1)).rstrip("\n"), _read(strategy))
    return _NUMBERS.sub(_numbers, text)


class Script:
    """One Lua script: its source and the SHA1 that Redis knows it by."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return f"Script({self.name!r}, sha={self.sha[:8]})"


def _program(name: str, strategies: Sequence[str], counter: bool) -> Script:
    """The prelude, floordiv if the rest calls it, the counter (if `counter`), the
    helpers of `strategies`, and the entry with their bodies in its loop, each under its code."""
    helpers = sorted({helper for strategy in strategies for helper in _HELPERS.get(strategy, ())})
    bodies = "\nelse".join(
        f"if code == {STRATEGY_SCRIPTS.index(strategy) + 1} then -- {strategy}\n{_body(strategy)}"
        for strategy in strategies
    )
    entry = _read("decide").replace(_STRATEGIES, f"{bodies}\nend" if strategies else "")
    rest = "\n".join(
        [
            *map(_read, _COUNTER_PARTS if counter else ()),
            _body("_lists"),
            *map(_read, helpers),
            entry,
        ]
    )
    division = [_read("_floordiv")] if _FLOORDIV.search(rest) else []
    return Script(name, "\n".join([_read("_prelude"), *division, rest]))


def with_counter(script: str) -> str:
    """The name of the program that runs the strategy `script` and the counter."""
    return f"{COUNTER}+{script}"


PROGRAMS = {
    COUNTER: _program(f"decide ({COUNTER})", (), True),
    **{script: _program(f"decide ({script})", (script,), False) for script in STRATEGY_SCRIPTS},
    **{
        with_counter(script): _program(f"decide ({with_counter(script)})", (script,), True)
        for script in STRATEGY_SCRIPTS
    },
    EVERY_SCRIPT: _program(EVERY_SCRIPT, STRATEGY_SCRIPTS, True),
}
"""The programs by the strategies they hold: one alone, with the counter (`with_counter`), the
counter alone (`COUNTER`), or everything (`EVERY_SCRIPT`)."""

SCRIPTS = {
    **{program.name: program for program in PROGRAMS.values()},
    "increment_with_ttl": Script(
        "increment_with_ttl", "\n".join([_read("_counter"), _read("increment_with_ttl")])
    ),
    "lock_release": Script("lock_release", _read("lock_release")),
    "start_check": Script("start_check", _read("start_check")),
}
"""Every script the backend loads, by name (`start_check`: the start-up check, `_access.py`)."""


async def load_all(client: Any, cluster: bool) -> None:
    """`SCRIPT LOAD` every script: pipelined on one node, on every node of a cluster.

    On one node a `PING` goes first: a server that wants a password answers it with
    `NOAUTH` (the error names what is missing), where a pipeline of scripts, some larger than
    the 16 KiB an unauthenticated client may send, gets the connection closed instead."""
    if cluster:
        for script in SCRIPTS.values():
            await client.script_load(script.source)
        return
    await client.ping()
    pipe = client.pipeline(transaction=False)
    for script in SCRIPTS.values():
        pipe.script_load(script.source)
    await pipe.execute()


def evalsha(client: Any, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Awaitable[Any]:
    """`EVALSHA` with `keys` (the backend loads the scripts again on a `NoScriptError`)."""
    return client.evalsha(sha, len(keys), *keys, *args)


def decode_state(raw: bytes | None) -> list[int] | None:
    """The state the programs read from a stored value: `i` then little-endian doubles, each a
    whole number below 2**53 (`load_state` in `lua/_list_io.lua`); or `h` then such doubles,
    CostBasedTokenBucket's: tokens and last_ms, then its cost history as runs of (cost, count),
    each count at least 1, expanded here, then the rate it was written under when the last
    number is negative (`limit, -period_ms`); or `q`, PriorityQueue's log (`_queue_log`). None
    (a fresh key) for anything else."""
    if raw is not None and raw[:1] == _QUEUE_MARK:
        return _queue_log(raw)
    if raw is None or raw[:1] not in (_STATE_MARK, _RUNS_MARK) or (len(raw) - 1) % 8:
        return None
    values = struct.unpack(f"<{(len(raw) - 1) // 8}d", raw[1:])
    if not all(v.is_integer() and abs(v) < EXACT_LIMIT for v in values):
        return None
    state = [int(v) for v in values]
    if raw[:1] == _STATE_MARK:
        return state
    rate: list[int] = []
    if len(state) >= 4 and state[-1] < 0:
        state, rate = state[:-2], state[-2:]
    runs = state[2:]
    if len(state) < 2 or len(runs) % 2 or any(count < 1 for count in runs[1::2]):
        return None
    history = [cost for cost, count in zip(runs[::2], runs[1::2]) for _ in range(count)]
    return state[:2] + history + rate


def _queue_log(raw: bytes) -> list[int] | None:
    """PriorityQueue's log `[t1, p1, c1, ...]` from a `q` state (`lua/priority_queue.lua`): `q`,
    records of (time, priority, cost), then a block: the front (4 slots of records, the oldest
    entries in f + 1 .. f + k), the cost per priority, the newest entry's cost and time, the
    entries per priority, the oldest entry's time, np * 256 + f * 16 + k (np: the newest entry's
    priority), where the newest of the records after the front is, where they start and stop,
    `q`. Records of priority 0 have left. None unless it holds what the program counts on: whole
    numbers, priorities 1 to 4, costs >= 0 totalling at most 2**52, entries in time order, a
    block that sums them up."""
    place = len(raw) - _QUEUE_BLOCK.size
    if place < 1 or raw[-1:] != _QUEUE_MARK:
        return None
    front, *costs, last_c, last_t, n1, n2, n3, n4, first_t, small, newest, start, stop, _ = (
        _QUEUE_BLOCK.unpack_from(raw, place)
    )
    sums = [n1, n2, n3, n4, *costs]
    size = _QUEUE_RECORD.size
    if not (
        all(n.is_integer() for n in (start, stop, newest, small))
        and 1 <= start <= stop == place
        and (stop - start) % size == 0
        and 0 <= small < 5 * 256
    ):
        return None
    last_p, f, k = int(small) // 256, int(small) % 256 // 16, int(small) % 16
    if f + k > 4:
        return None
    records = [*_QUEUE_RECORD.iter_unpack(front[f * size : (f + k) * size])]
    after = len(records)  # the records after the front, from here
    records += _QUEUE_RECORD.iter_unpack(raw[int(start) : int(stop)])
    found = [0.0] * 8
    log: list[int] = []
    previous, where = -math.inf, -1.0
    for index, (time, priority, cost) in enumerate(records):
        if not (
            time.is_integer()
            and abs(time) < EXACT_LIMIT
            and cost.is_integer()
            and 0 <= cost < EXACT_LIMIT
            and priority <= 4
            and (time >= previous or not priority)  # the entries' times, not those that left
        ):
            return None
        if priority:
            previous = time
            found[priority - 1] += 1
            found[priority + 3] += cost
            log += [int(time), priority, int(cost)]
            if index >= after:
                where = start + (index - after) * size
    if sums != found or sum(found[4:]) > 2**52:
        return None
    ends = (log[0], *log[-3:]) if log else None
    if ends and (ends != (first_t, last_t, last_p, last_c) or where not in (-1.0, newest)):
        return None
    return log
