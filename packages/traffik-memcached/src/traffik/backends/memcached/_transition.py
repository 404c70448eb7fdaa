"""Strategy state under compare-and-swap: `gets` the state, decide a batch of hits (or refund) here, `cas` it back."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Callable, Optional, TypeVar

from traffik.backends.memcached._client import Flagged, NodeClient
from traffik.backends.memcached._counters import ATTEMPTS
from traffik.backends.memcached._expiry import exptime
from traffik.backends.memcached._gate import UNSENT, aligned, sending
from traffik.exceptions import BackendError
from traffik.strategies.state import decode_state, encode_state

if TYPE_CHECKING:
    from aiomcache.pool import Connection

    from traffik.backends.memcached._node import Node, Operation
    from traffik.decision import Decision
    from traffik.rates import Rate
    from traffik.strategies.base import StateStrategy

__all__ = ["Hit", "refund", "transition"]

T = TypeVar("T")

_MAX_BACKOFF = 0.05


Hit = tuple["StateStrategy", "Rate", int]
"""A hit to decide: its strategy, rate and cost."""


async def transition(
    node: Node, key: bytes, hits: list[Hit], now_ms: Callable[[], int], *, charge: bool = True
) -> list[Decision]:
    """Run each hit's transition in order on the state at `key`, read once (`gets`) at
    `now_ms()`, and write the final state once, with `add` (a new key) or `cas`: every hit
    is decided as if the hits came one after another. A lost race re-reads the state and
    decides the whole batch again, after a short random backoff, at most `ATTEMPTS` times.
    When every hit is refused with no new state nothing is written (a refused hit's new
    state is one converted from another rate's: `traffik.strategies.base.Transition`).
    Without `charge`, only such a conversion is written, never an admitted hit's state. A
    hit whose decision was abandoned before the batch had its connection is left out
    (`_gate.sending`)."""

    async def attempt(client: NodeClient, conn: Connection) -> Optional[list[Decision]]:
        sent = sending(hits)
        if not sent:
            return aligned(hits, sent, [], UNSENT)
        raw, token = await client.gets_on(conn, key)
        state = decode_state(raw.value if isinstance(raw, Flagged) else raw)
        now = now_ms()
        decisions: list[Decision] = []
        written, ttl_ms = False, 0
        for strategy, rate, cost in sent:
            decision, new_state, new_ttl_ms = strategy.transition(state, now, rate, cost)
            decisions.append(decision)
            if new_state is not None and (charge or not decision.allowed):
                state, ttl_ms, written = new_state, new_ttl_ms, True
        if not written or state is None:
            return aligned(hits, sent, decisions, UNSENT)
        data, expiry = encode_state(state).encode("ascii"), exptime(ttl_ms / 1000)
        if raw is None:
            stored = await client.store_on(conn, b"add", key, data, expiry)
        else:
            stored = await client.store_on(conn, b"cas", key, data, expiry, token)
        return aligned(hits, sent, decisions, UNSENT) if stored else None

    return await _until_stored(node, attempt, "evaluate")


async def refund(
    node: Node,
    key: bytes,
    strategy: StateStrategy,
    rate: Rate,
    cost: int,
    now_ms: Callable[[], int],
) -> None:
    """Give `cost` units back to the state at `key` (`strategy.refund`: never past a full
    budget), written with `cas` and retried as `transition` is; a missing or unreadable
    state is a full budget already, and is left alone."""

    async def attempt(client: NodeClient, conn: Connection) -> Optional[bool]:
        raw, token = await client.gets_on(conn, key)
        state = decode_state(raw.value if isinstance(raw, Flagged) else raw)
        if state is None:
            return True
        new_state, ttl_ms = strategy.refund(state, now_ms(), rate, cost)
        data, expiry = encode_state(new_state).encode("ascii"), exptime(ttl_ms / 1000)
        return await client.store_on(conn, b"cas", key, data, expiry, token) or None

    await _until_stored(node, attempt, "refund")


async def _until_stored(node: Node, attempt: Operation[Optional[T]], what: str) -> T:
    """Run `attempt` until it answers (None: it lost a compare-and-swap race), backing off
    a short random time between tries, at most `ATTEMPTS` times."""
    for tries in range(ATTEMPTS):
        result = await node.run(attempt, what)
        if result is not None:
            return result
        await asyncio.sleep(random.random() * min(_MAX_BACKOFF, 0.001 * 2**tries))
    raise BackendError(
        f"memcached {node.name}: lost {ATTEMPTS} compare-and-swap races in a row on one key ({what}); "
        "the key is extremely contended (more processes or pool connections than memcached can serialise)"
    )
