"""A strategy transition under compare-and-swap: `gets` the state, decide here, `cas` it back."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Callable, Optional

from traffik.backends.memcached._client import Flagged, NodeClient
from traffik.backends.memcached._counters import ATTEMPTS
from traffik.backends.memcached._expiry import exptime
from traffik.exceptions import BackendError
from traffik.strategies.state import decode_state, encode_state

if TYPE_CHECKING:
    from aiomcache.pool import Connection

    from traffik.backends.memcached._node import Node
    from traffik.decision import Decision
    from traffik.rates import Rate
    from traffik.strategies.base import StateStrategy

__all__ = ["transition"]

_MAX_BACKOFF = 0.05


async def transition(
    node: Node,
    key: bytes,
    strategy: StateStrategy,
    rate: Rate,
    cost: int,
    commit: bool,
    now_ms: Callable[[], int],
) -> Decision:
    """Run `strategy`'s transition on `key` at `now_ms()`, writing the new state with `add`
    (a new key) or `cas`; a lost race is retried after a short random backoff, at most
    `ATTEMPTS` times. A rejected hit (no new state) or `commit=False` writes nothing."""

    async def attempt(client: NodeClient, conn: Connection) -> Optional[Decision]:
        raw, token = await client.gets_on(conn, key)
        state = decode_state(raw.value if isinstance(raw, Flagged) else raw)
        decision, new_state, ttl_ms = strategy.transition(state, now_ms(), rate, cost)
        if not commit or new_state is None:
            return decision
        data, expiry = encode_state(new_state).encode("ascii"), exptime(ttl_ms / 1000)
        if raw is None:
            stored = await client.store_on(conn, b"add", key, data, expiry)
        else:
            stored = await client.store_on(conn, b"cas", key, data, expiry, token)
        return decision if stored else None

    for tries in range(ATTEMPTS):
        decision = await node.run(attempt, "evaluate")
        if decision is not None:
            return decision
        await asyncio.sleep(random.random() * min(_MAX_BACKOFF, 0.001 * 2**tries))
    raise BackendError(
        f"memcached {node.name}: lost {ATTEMPTS} compare-and-swap races in a row on one key; "
        "the key is extremely contended (more processes or pool connections than memcached can serialise)"
    )
