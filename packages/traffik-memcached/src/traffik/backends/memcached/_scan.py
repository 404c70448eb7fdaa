"""Listing keys: what `lru_crawler metadump` says each node holds, mapped back to our keys."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Optional
from urllib.parse import unquote

from traffik.backends.memcached._keys import readable_prefix
from traffik.backends.memcached._node import Node

__all__ = ["Listing", "scan"]

_HASHED = re.compile(r"[0-9a-f]{64}")


class Listing(list[str]):
    """The keys found (a `list[str]`), and `hidden`: how many keys stored hashed may match
    too, which cannot be listed (their text is not in memcached, only a hash of it)."""

    hidden = 0


async def scan(nodes: Sequence[Node], space: str, prefix: str, limit: Optional[int]) -> Listing:
    """The keys of the namespace whose prefix is `space` (`ns:`) that start with `prefix`, in
    each node's current generation. Keys too long or unsafe for memcached are stored hashed
    and cannot be listed: they are counted in `hidden`. A `SlidingWindowCounter` key is
    listed through its marker; its window counters (`<key>#w<id>/<period>`) are not listed.
    Memcached may still list an expired item it has not reclaimed."""
    found = Listing()
    for node in nodes:
        head = f"{space}{await node.current_generation()}:"
        wanted = readable_prefix(head + prefix[len(space) :])
        dumped = await node.run(lambda client, conn: client.metadump_on(conn), "metadump")
        for raw in dumped:
            stored = unquote(raw.decode("ascii", "replace"))
            if not stored.startswith(head):
                continue
            if "#" in stored:
                readable, _, digest = stored.partition("#")
                if _HASHED.fullmatch(digest) and (
                    readable.startswith(wanted) or wanted.startswith(readable)
                ):
                    found.hidden += 1
                continue
            key = space + stored[len(head) :]
            if key.startswith(prefix) and (limit is None or len(found) < limit):
                found.append(key)
    return found
