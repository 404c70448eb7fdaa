"""The Lua scripts (`lua/*.lua`): their sources, SHA1s, and running one by `EVALSHA`."""

from __future__ import annotations

import hashlib
import math
import struct
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError
from traffik.strategies.state import decode_state as decode_text_state

__all__ = [
    "SCRIPTS",
    "STRATEGY_SCRIPTS",
    "Script",
    "decode_state",
    "load_all",
    "reload_and_run",
    "run",
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

_OTHER_SCRIPTS = ("increment_with_ttl", "lock_release")


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


def _load_scripts() -> dict[str, Script]:
    prelude = _read("_prelude")
    scripts = {name: Script(name, prelude + "\n" + _read(name)) for name in STRATEGY_SCRIPTS}
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


async def run(client: Any, script: Script, key: str, args: Any) -> Any:
    """`EVALSHA` with one key; a server that lost its scripts (restart, failover) gets it again."""
    try:
        return await client.evalsha(script.sha, 1, key, *args)
    except NoScriptError:
        return await reload_and_run(client, script, key, args)


async def reload_and_run(client: Any, script: Script, key: str, args: Any) -> Any:
    """`SCRIPT LOAD`, then `EVALSHA` again: after a `NoScriptError`."""
    await client.script_load(script.source)
    return await client.evalsha(script.sha, 1, key, *args)


def decode_state(raw: bytes | None) -> list[float] | None:
    """The state a script reads from a stored value (None: a fresh key), as `lua/_prelude.lua`
    does: `#` then little-endian doubles, or the text that earlier versions wrote."""
    if raw is None or not raw.startswith(b"#"):
        return decode_text_state(raw)
    if (len(raw) - 1) % 8:
        return None
    values = list(struct.unpack(f"<{(len(raw) - 1) // 8}d", raw[1:]))
    return values if all(math.isfinite(v) for v in values) else None
