"""Listing keys: what `lru_crawler metadump` says each node holds, mapped back to our keys."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional
from urllib.parse import unquote

from traffik.backends.memcached._node import Node

__all__ = ["scan"]


async def scan(nodes: Sequence[Node], space: str, prefix: str, limit: Optional[int]) -> list[str]:
    """The keys of the namespace whose prefix is `space` (`ns:`) that start with `prefix`, in
    each node's current generation. Keys too long or unsafe for memcached are stored hashed
    and cannot be listed; memcached may still list an expired item it has not reclaimed."""
    found: list[str] = []
    for node in nodes:
        head = f"{space}{await node.current_generation()}:"
        dumped = await node.run(lambda client, conn: client.metadump_on(conn), "metadump")
        for raw in dumped:
            stored = unquote(raw.decode("ascii", "replace"))
            if stored.startswith(head) and "#" not in stored:
                key = space + stored[len(head) :]
                if key.startswith(prefix):
                    found.append(key)
                    if limit is not None and len(found) >= limit:
                        return found
    return found
