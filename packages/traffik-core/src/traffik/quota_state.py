"""A quota context's state: what it holds, and what it tells without changing anything.

`QuotaState` is the base of `QuotaContext` (through `traffik.quota_settling.QuotaSettling`):
the slots `QuotaContext.__init__` fills, the properties that read them (`active`, `consumed`,
`queued_cost`, `admitted`, ...; `apply_on_error` checked as it is set), and `check` and
`stat`, which ask the throttles' stores and count nothing. An unbound `check` asks them what
`apply` would decide: the queued hits made into the same step (`traffik.together`), not
committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

from traffik.exceptions import ConfigurationError
from traffik.quota_entries import one_per_bucket
from traffik.throttle_settings import check_cost
from traffik.throttles import Throttle
from traffik.together import Entry, _as_one_step, _one_item_per_bucket

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.quota_entries import QueuedHit
    from traffik.quotas import QuotaContext
    from traffik.typing import ApplyOnError, StrategyStat

__all__ = ["QuotaState"]


class QuotaState:
    """A quota context's state and what it tells of it, for `QuotaContext`."""

    __slots__ = (
        "_admitted",
        "_applied_cost",
        "_apply_on_error",
        "_applying",
        "_cancelled",
        "_children",
        "_consumed",
        "_deciding",
        "_default_context",
        "_depth",
        "_entered",
        "_queue",
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
    _apply_on_error: ApplyOnError
    _applying: Optional[asyncio.Future[bool]]
    _deciding: bool
    _depth: int

    @property
    def apply_on_error(self) -> ApplyOnError:
        """Whether the hits are applied when the block raises: True, False, or the exception
        type (or tuple of types) that still applies them; checked as it is set.

        Raises:
            ConfigurationError: When set to anything else (a type's name, a list, an
                exception instance).
        """
        return self._apply_on_error

    @apply_on_error.setter
    def apply_on_error(self, value: ApplyOnError) -> None:
        if not (
            isinstance(value, bool)
            or _exception_type(value)
            or (isinstance(value, tuple) and all(_exception_type(kind) for kind in value))
        ):
            raise ConfigurationError(
                f"QuotaContext: apply_on_error={value!r} must be True, False, an exception "
                "class (TimeoutError: the class itself, not its name or an instance) or a "
                "tuple of them ((TimeoutError, ConnectionError))"
            )
        self._apply_on_error = value

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
        whether the queued hits (each with its own context) would be admitted now as
        `apply()` decides them, hits that land on one bucket summed.

        Args:
            throttle: The throttle to check; None for the owner, or, unbound, every queued
                hit.
            cost: The units to check for (a whole number >= 0); None for the throttle's cost
                (or each queued hit's).
            context: Context laid over the default (or over each queued hit's).

        Returns:
            Whether the hit, or every queued hit, would be admitted now.

        Raises:
            ConfigurationError: When `cost` is not a valid cost.
            TypeError: When `throttle` is not a throttle.
        """
        if cost is not None:
            cost = check_cost(cost, "QuotaContext.check()")
        target = self._target(throttle, "check")
        if target is None:
            return await self._would_admit_queued(cost, context)
        ctx = {**self._default_context, **context} if context else self._default_context
        return bool(await target.check(self.connection, cost, ctx))

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
            TypeError: When `throttle` is not a throttle.
        """
        target = self._target(throttle, "stat")
        if target is None:
            raise ValueError(
                "QuotaContext.stat(): no throttle given, and the context is not bound to one"
            )
        ctx = {**self._default_context, **context} if context else self._default_context
        return await target.stat(self.connection, ctx)

    async def _would_admit_queued(
        self, cost: Optional[int], context: Optional[Mapping[str, Any]]
    ) -> bool:
        """An unbound `check`: the queued hits made into the entries `apply` makes
        (`one_per_bucket`); a backend's entries that `apply` decides in one step asked of it
        as that step, uncommitted (`_admitted_as_one`); the others, and those whose step
        failed, checked each (`Throttle.check`, whose `on_error` answers a failure)."""
        connection = self.connection
        entries = self._queue
        costs = [cost if cost is not None else await e.resolved_cost(connection) for e in entries]
        groups: dict[int, tuple[ThrottleBackend, list[Entry]]] = {}
        for hit in one_per_bucket(entries, costs, connection):
            hit.context = {**hit.throttle.context, **hit.context, **(context or {})}
            backend = hit.throttle.get_backend(connection)
            groups.setdefault(id(backend), (backend, []))[1].append(hit)
        alone: list[Entry] = []
        for backend, group in groups.values():
            if not _as_one_step(group):  # (`apply` hits these one by one)
                alone += group
                continue
            try:
                if not await _admitted_as_one(group, backend):
                    return False
            except ConfigurationError:
                raise
            except Exception:
                alone += group
        for hit in alone:
            if not await hit.throttle.check(connection, hit.cost, hit.context):
                return False
        return True

    def _target(self, throttle: Any, doing: str) -> Optional[Throttle]:
        """`throttle` when one is given, else the owner (None: unbound)."""
        if throttle is None:
            return self.owner
        if not isinstance(throttle, Throttle):
            raise TypeError(
                f"QuotaContext.{doing}() takes HTTPThrottle or WebSocketThrottle instances "
                f"(None: the context's own), not {throttle!r}"
            )
        return throttle


def _exception_type(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseException)


async def _admitted_as_one(group: list[Entry], backend: ThrottleBackend) -> bool:
    """Whether `backend` would admit `group` now in the one step `apply` takes for it
    (`traffik.together`: items on one bucket made one, costs summed), nothing charged."""
    per_hit = []
    for hit in group:
        prepared = await hit.throttle._prepare(hit.connection, hit.context, hit.cost, backend)
        if prepared is not None:  # (None: nothing to decide, e.g. an exempted client)
            rates, cost, key = prepared
            per_hit.append(hit.throttle.items(key, rates, cost, backend))
    items, _ = _one_item_per_bucket(per_hit)
    return not items or (await backend.evaluate_all(items, commit=False)).allowed
