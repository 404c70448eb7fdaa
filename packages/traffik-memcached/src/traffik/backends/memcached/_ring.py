"""Which node holds a key: rendezvous (highest random weight) hashing over the node list.

Every process that lists the same nodes, in any order, picks the same node for a key, and
taking one node out of the list moves only the keys it held.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Generic, TypeVar

__all__ = ["Ring"]

T = TypeVar("T")


class Ring(Generic[T]):
    """`ring.pick(key)` is the node for `key`; nodes are told apart by their names."""

    __slots__ = ("_nodes", "_seeds")

    def __init__(self, nodes: Sequence[T], names: Sequence[str]) -> None:
        self._nodes = list(nodes)
        self._seeds = [hashlib.blake2b(name.encode()).digest() for name in names]

    def pick(self, key: str) -> T:
        nodes = self._nodes
        if len(nodes) == 1:
            return nodes[0]
        data = key.encode("utf-8", "surrogatepass")
        best, best_score = 0, b""
        for index, seed in enumerate(self._seeds):
            score = hashlib.blake2b(data, digest_size=8, key=seed).digest()
            if score > best_score:
                best, best_score = index, score
        return nodes[best]
