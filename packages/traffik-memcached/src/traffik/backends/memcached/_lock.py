"""`MemcachedLock`: a named lock held in memcached with `add`, a random token and a time to live.

Acquiring stores the lock's key with `add` (only one caller can create it) and a random
token; a busy lock is retried with jittered exponential backoff until `blocking_timeout`.
Every lock has a time to live (`DEFAULT_LOCK_TTL` unless given), so a holder that crashes
cannot block the key for longer than that. Releasing is a compare-and-delete: `gets` the
key, and only if it still holds this holder's token, `cas` it to an already-past expiry,
which succeeds only if nobody changed the key in between. A lock whose time to live ran out
while held is not deleted (someone else may hold it now) and its release raises
`LockReleaseError`. A caller cancelled while its `add` or release is on its way leaves the
step to finish in the background, and a lock stored for it is deleted at once
(`traffik.backends.store_locks.finished`). Ownership is per asyncio task; `reentrant=True`
lets the owning task acquire again, counted locally.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from traffik.backends.memcached._expiry import EXPIRED, exptime
from traffik.backends.store_locks import DEFAULT_LOCK_TTL, finished
from traffik.exceptions import BackendError, LockAcquisitionError, LockReleaseError

if TYPE_CHECKING:
    from aiomcache.pool import Connection

    from traffik.backends.memcached._client import NodeClient
    from traffik.backends.memcached._node import Node

__all__ = ["DEFAULT_LOCK_TTL", "Hold", "MemcachedLock"]

_FIRST_DELAY = 0.002
_MAX_DELAY = 0.05

Locate = Callable[[str], Awaitable["tuple[Node, bytes]"]]


@dataclass
class Hold:
    """A lock this process holds: which task, the token it stored, and where."""

    owner: asyncio.Task[Any]
    token: bytes
    node: Node
    key: bytes
    count: int = 1


class MemcachedLock:
    """One named lock; see the module docstring."""

    __slots__ = ("_held", "_locate", "_reentrant", "name", "ttl")

    def __init__(
        self, locate: Locate, held: dict[str, Hold], name: str, ttl: float, reentrant: bool
    ) -> None:
        self._locate = locate
        self._held = held
        self.name = name
        self.ttl = ttl
        self._reentrant = reentrant

    def __repr__(self) -> str:
        return f"MemcachedLock({self.name!r}, ttl={self.ttl!r})"

    def is_owner(self, task: Optional[asyncio.Task[Any]] = None) -> bool:
        hold = self._held.get(self.name)
        return hold is not None and hold.owner is (task or asyncio.current_task())

    async def acquire(
        self, blocking: bool = True, blocking_timeout: Optional[float] = None
    ) -> bool:
        task = asyncio.current_task()
        if task is None:
            raise LockAcquisitionError(
                f"lock {self.name!r} must be acquired inside an asyncio task"
            )
        hold = self._held.get(self.name)
        if hold is not None and hold.owner is task:
            if not self._reentrant:
                raise LockAcquisitionError(
                    f"lock {self.name!r} is already held by this task (not reentrant)"
                )
            hold.count += 1
            return True
        loop = asyncio.get_running_loop()
        deadline = None if blocking_timeout is None else loop.time() + blocking_timeout
        delay = _FIRST_DELAY
        while True:
            token = secrets.token_hex(16).encode()
            try:
                node, key = await self._locate(self.name)
                stored = await finished(
                    node.run(_adder(key, token, exptime(self.ttl)), "acquiring a lock"),
                    f"lock {self.name!r}",
                    _undo(node, key, token),
                )
            except BackendError as exc:
                raise LockAcquisitionError(f"could not acquire lock {self.name!r}: {exc}") from exc
            if stored:
                self._held[self.name] = Hold(task, token, node, key)
                return True
            if not blocking:
                return False
            pause = delay * (0.5 + random.random() / 2)
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    return False
                pause = min(pause, left)
            await asyncio.sleep(pause)
            delay = min(delay * 2, _MAX_DELAY)

    async def release(self) -> None:
        hold = self._held.get(self.name)
        if hold is None or hold.owner is not asyncio.current_task():
            raise LockReleaseError(f"lock {self.name!r} is not held by this task")
        hold.count -= 1
        if hold.count:
            return
        del self._held[self.name]
        try:
            released = await finished(
                hold.node.run(_compare_and_delete(hold.key, hold.token), "releasing a lock"),
                f"lock {self.name!r}",
            )
        except BackendError as exc:
            raise LockReleaseError(f"could not release lock {self.name!r}: {exc}") from exc
        if not released:
            raise LockReleaseError(
                f"lock {self.name!r} outlived its ttl={self.ttl}s and expired before it was released "
                "(another holder may have taken it); give it a longer ttl"
            )


def _adder(
    key: bytes, token: bytes, expiry: int
) -> Callable[[NodeClient, Connection], Awaitable[bool]]:
    async def add(client: NodeClient, conn: Connection) -> bool:
        return await client.store_on(conn, b"add", key, token, expiry)

    return add


def _undo(node: Node, key: bytes, token: bytes) -> Callable[[bool], Awaitable[None]]:
    """What deletes the lock stored for a caller cancelled meanwhile (`finished`)."""

    async def undo(stored: bool) -> None:
        if stored:
            await node.run(_compare_and_delete(key, token), "releasing a lock")

    return undo


def _compare_and_delete(
    key: bytes, token: bytes
) -> Callable[[NodeClient, Connection], Awaitable[bool]]:
    async def release(client: NodeClient, conn: Connection) -> bool:
        value, cas = await client.gets_on(conn, key)
        if value != token:
            return False
        return await client.store_on(conn, b"cas", key, b"", EXPIRED, cas)

    return release
