"""A quota context's state: what it holds, and what it tells without changing anything.

`QuotaState` is the base of `QuotaContext` (through `traffik.quota_settling.QuotaSettling`):
the slots `QuotaContext.__init__` fills, the properties that read them (`active`, `consumed`,
`queued_cost`, `admitted`, ...), and `check` and `stat`, which ask the throttles' stores and
count nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from traffik.quota_entries import QueuedHit
    from traffik.quotas import QuotaContext
    from traffik.throttles import Throttle
    from traffik.typing import StrategyStat

__all__ = ["QuotaState"]


class QuotaState:
    """A quota context's state and what it tells of it, for `QuotaContext`."""

    __slots__ = (
        "_admitted",
        "_applied_cost",
        "_applying",
        "_cancelled",
        "_children",
        "_consumed",
        "_deciding",
        "_default_context",
        "_depth",
        "_entered",
        "_queue",
        "apply_on_error",
        "apply_on_exit",
        "connection",
        "lock_config",
        "owner",
        "parent",
    )

    connection: Any
    owner: Optional[Throttle]
    parent: Optional[QuotaContext]
    _default_context: dict[str, Any]
    _queue: list[QueuedHit]
    _children: dict[int, QuotaContext]
    _consumed: bool
    _cancelled: bool
    _admitted: Optional[bool]
    _applied_cost: int
    _applying: Optional[asyncio.Future[bool]]
    _deciding: bool
    _depth: int

    @property
    def consumed(self) -> bool:
        """Whether the context is settled: applied (admitted or refused) or merged."""
        return self._consumed

    @property
    def cancelled(self) -> bool:
        """Whether the context was cancelled (`cancel()`): its hits were dropped."""
        return self._cancelled

    @property
    def active(self) -> bool:
        """Neither settled nor cancelled: hits may still be queued."""
        return not (self._consumed or self._cancelled)

    @property
    def is_bound(self) -> bool:
        """Whether the context has an owner throttle."""
        return self.owner is not None

    @property
    def is_nested(self) -> bool:
        """Whether the context has a parent."""
        return self.parent is not None

    @property
    def depth(self) -> int:
        """How deeply the context is nested: 0 for a top-level one."""
        return self._depth

    @property
    def queued_cost(self) -> int:
        """The cost queued here and in active children (a cost function counts as 1)."""
        own = sum(1 if entry.cost is None else entry.cost for entry in self._queue)
        return own + sum(child.queued_cost for child in self._children.values())

    @property
    def applied_cost(self) -> int:
        """The units the apply took (0 before it, and after a refusal); hits that took
        nothing (an exempted client, a shadow throttle that would refuse) add nothing."""
        return self._applied_cost

    @property
    def admitted(self) -> Optional[bool]:
        """Whether the apply admitted the hits; None before it."""
        return self._admitted

    async def check(
        self,
        throttle: Optional[Throttle] = None,
        cost: Optional[int] = None,
        context: Optional[Mapping[str, Any]] = None,
    ) -> bool:
        """Best effort, nothing counted. With a throttle (or a bound context): whether a hit
        of `cost` (default: the throttle's cost) would pass now. Unbound with no throttle:
        whether every queued hit would pass now (each with its own context).

        Args:
            throttle: The throttle to check; None for the owner, or, unbound, every queued
                hit.
            cost: The units to check for; None for the throttle's cost (or each queued
                hit's).
            context: Context laid over the default (or over each queued hit's).

        Returns:
            Whether the hit, or every queued hit, would be admitted now.
        """
        target = throttle if throttle is not None else self.owner
        if target is not None:
            ctx = {**self._default_context, **context} if context else self._default_context
            return bool(await target.check(self.connection, cost, ctx))
        for entry in self._queue:
            own = {**(entry.context or {}), **context} if context else entry.context
            needed = await entry.resolved_cost(self.connection) if cost is None else cost
            if not await entry.throttle.check(self.connection, needed, own):
                return False
        return True

    test = check

    async def stat(
        self, throttle: Optional[Throttle] = None, context: Optional[Mapping[str, Any]] = None
    ) -> Optional[StrategyStat]:
        """`throttle.stat` (default: the owner's) for this connection and context.

        Args:
            throttle: The throttle to read; None for the owner.
            context: Context laid over the context's default.

        Returns:
            The client's `StrategyStat`, or None when unknown.

        Raises:
            ValueError: When no throttle is given and the context has no owner.
        """
        target = throttle if throttle is not None else self.owner
        if target is None:
            raise ValueError(
                "QuotaContext.stat(): no throttle given, and the context is not bound to one"
            )
        ctx = {**self._default_context, **context} if context else self._default_context
        return await target.stat(self.connection, ctx)
