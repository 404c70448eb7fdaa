"""The Lua scripts (`lua/*.lua`): their sources, SHA1s, loading them and running one by `EVALSHA`."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Awaitable
from importlib import resources
from typing import Any

from traffik.strategies.base import EXACT_LIMIT

__all__ = [
    "SCRIPTS",
    "STRATEGY_SCRIPTS",
    "Script",
    "decode_state",
    "evalsha",
    "load_all",
]

STRATEGY_SCRIPTS = (
    "sliding_window_counter",
    "sliding_window_log",
    "token_bucket",
    "leaky_bucket",
    "leaky_bucket_with_queue",
    "gcra",
)
"""Scripts named by `StateStrategy.script`; each starts with `lua/_prelude.lua`."""

_PARTS = {
    "leaky_bucket": "_leaky_bucket",
    "leaky_bucket_with_queue": "_leaky_bucket",
}
"""Code some strategy scripts share, placed between the prelude and the script."""

_OTHER_SCRIPTS = ("increment_with_ttl", "lock_release")
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


def _strategy_source(name: str, prelude: str) -> str:
    part = _PARTS.get(name)
    return "\n".join([prelude, *([_read(part)] if part else []), _read(name)])


def _load_scripts() -> dict[str, Script]:
    prelude = _read("_prelude")
    scripts = {name: Script(name, _strategy_source(name, prelude)) for name in STRATEGY_SCRIPTS}
    scripts.update((name, Script(name, _read(name))) for name in _OTHER_SCRIPTS)
    return scripts


SCRIPTS = _load_scripts()


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


def evalsha(client: Any, sha: str, key: str, args: Any) -> Awaitable[Any]:
    """`EVALSHA` with one key (the backend loads the scripts again on a `NoScriptError`)."""
    return client.evalsha(sha, 1, key, *args)


def decode_state(raw: bytes | None) -> list[int] | None:
    """The state a strategy script reads from a stored value, as `load_state` in
    `lua/_prelude.lua` does: `i` then little-endian doubles, each a whole number below
    2**53; None (a fresh key) for anything else."""
    if raw is None or not raw.startswith(_STATE_MARK) or (len(raw) - 1) % 8:
        return None
    values = struct.unpack(f"<{(len(raw) - 1) // 8}d", raw[1:])
    if not all(v.is_integer() and abs(v) < EXACT_LIMIT for v in values):
        return None
    return [int(v) for v in values]
