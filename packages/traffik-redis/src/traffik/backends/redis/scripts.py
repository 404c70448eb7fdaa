"""The Lua scripts (`lua/*.lua`): how they are put together, their SHA1s, loading and running them.

Every decision and refund runs `lua/decide.lua` (the entry) after the helpers
(`_prelude.lua`), FixedWindow's counter (`_counter.lua`, `fixed_window.lua`) when the call has
counters, and the transitions and refunds of the state strategies, one Lua file per Python
strategy module, each written once. Redis runs a script's definitions on every call (about
0.4 us of server time per function): so a program holds the modules a call needs and no more
(one program per module, with or without the counter, and `decide` with everything for
calls that mix modules), and refunds are defined only on the calls that give back. For the
same reason `increment_with_ttl` is its own script, the counter's INCRBY and nothing else.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Awaitable, Sequence
from importlib import resources
from typing import Any

from traffik.strategies.base import EXACT_LIMIT

__all__ = [
    "COUNTER",
    "EVERY_MODULE",
    "MODULES",
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
"""The module of FixedWindow's counter (code 0); its own program runs only it."""
_COUNTER_PARTS = ("_counter", COUNTER)

MODULES = {
    "sliding_window": ("sliding_window_counter", "sliding_window_log"),
    "token_bucket": ("token_bucket",),
    "leaky_bucket": ("leaky_bucket", "leaky_bucket_with_queue"),
    "gcra": ("gcra",),
    "tiered": ("tiered_rate",),
    "adaptive": ("adaptive_throttle",),
    "priority": ("priority_queue",),
    "rollover": ("quota_with_rollover",),
    "cost_bucket": ("cost_based_token_bucket",),
}
"""Each Lua module of state strategies and the strategies it holds (`StateStrategy.script`)."""

_HELPERS = {
    "sliding_window": ("_entries",),
    "leaky_bucket": ("_entries",),
    "tiered": ("_periods",),
    "adaptive": ("_periods",),
    "rollover": ("_periods",),
}
"""Helper files a module needs besides the prelude; a program reads each once, before its modules."""

STRATEGY_SCRIPTS = tuple(name for names in MODULES.values() for name in names)
"""The state strategies in code order: a strategy's code is its place here, from 1."""

EVERY_MODULE = "decide"
"""The program with every module and the counter."""

_STATE_MARK = b"i"


def _read(name: str) -> str:
    return (
        resources.files(__package__)
        .joinpath("lua")
        .joinpath(f"{name}.lua")
        .read_text(encoding="utf-8")
    )


class Script:
    """One Lua script: its source and the SHA1 that Redis knows it by."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return f"Script({self.name!r}, sha={self.sha[:8]})"


def _program(name: str, modules: Sequence[str], counter: bool) -> Script:
    """The entry after the helpers, the counter (if `counter`) and `modules`, with their
    strategies in STEPS."""
    steps = ", ".join(
        f"[{STRATEGY_SCRIPTS.index(strategy) + 1}] = {strategy}"
        for module in modules
        for strategy in MODULES[module]
    )
    helpers = sorted({helper for module in modules for helper in _HELPERS.get(module, ())})
    parts = [
        _read("_prelude"),
        *map(_read, _COUNTER_PARTS if counter else ()),
        *map(_read, helpers),
        *map(_read, modules),
    ]
    return Script(name, "\n".join([*parts, f"local STEPS = {{{steps}}}", _read("decide")]))


def with_counter(module: str) -> str:
    """The name of the program that runs `module` and the counter."""
    return f"{COUNTER}+{module}"


PROGRAMS = {
    COUNTER: _program(f"decide ({COUNTER})", (), True),
    **{module: _program(f"decide ({module})", (module,), False) for module in MODULES},
    **{
        with_counter(module): _program(f"decide ({with_counter(module)})", (module,), True)
        for module in MODULES
    },
    EVERY_MODULE: _program(EVERY_MODULE, tuple(MODULES), True),
}
"""The programs by the modules they hold: a module alone, with the counter (`with_counter`),
the counter alone (`COUNTER`), or everything (`EVERY_MODULE`)."""

SCRIPTS = {
    **{program.name: program for program in PROGRAMS.values()},
    "increment_with_ttl": Script(
        "increment_with_ttl", "\n".join([_read("_counter"), _read("increment_with_ttl")])
    ),
    "lock_release": Script("lock_release", _read("lock_release")),
}
"""Every script the backend loads, by name."""


async def load_all(client: Any, cluster: bool) -> None:
    """`SCRIPT LOAD` every script: pipelined on one node, on every node of a cluster."""
    if cluster:
        for script in SCRIPTS.values():
            await client.script_load(script.source)
        return
    pipe = client.pipeline(transaction=False)
    for script in SCRIPTS.values():
        pipe.script_load(script.source)
    await pipe.execute()


def evalsha(client: Any, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Awaitable[Any]:
    """`EVALSHA` with `keys` (the backend loads the scripts again on a `NoScriptError`)."""
    return client.evalsha(sha, len(keys), *keys, *args)


def decode_state(raw: bytes | None) -> list[int] | None:
    """The state the programs read from a stored value, as `load_state` in `lua/_prelude.lua`
    does: `i` then little-endian doubles, each a whole number below 2**53; None (a fresh key)
    for anything else."""
    if raw is None or not raw.startswith(_STATE_MARK) or (len(raw) - 1) % 8:
        return None
    values = struct.unpack(f"<{(len(raw) - 1) // 8}d", raw[1:])
    if not all(v.is_integer() and abs(v) < EXACT_LIMIT for v in values):
        return None
    return [int(v) for v in values]
