"""`QuotaContext`: collect the costs of several throttle hits in a block, then apply them as one decision.

```python
async with throttle.quota(request) as quota:
    quota(cost=2)                  # queued, not counted yet
    quota(reports_throttle, cost=5)
    await run_the_work()
# on exit, both are decided at once: admitted together, or refused with nothing taken
```

traffik 1.2 took a lock for the whole block and then hit the queued throttles one by one,
so a refusal in the middle left the earlier hits counted. Here the apply is the one step that
`throttled(a, b)` uses (`traffik.together`): the queued hits of one backend are decided in
one atomic step (`evaluate_all`: one round trip on Redis), all or nothing; backends are
decided in turn, and a later refusal gives back what the earlier ones took. A refusal is
answered as a throttled hit is, by the first refusing throttle's handler (429 by default).
No lock is taken, so 1.2's lock defects (a lock never released after a manual `apply()`,
nested contexts that could deadlock on their parent's lock) cannot happen; `lock` and
`lock_config` are accepted for 1.2 code and change nothing.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Generator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from traffik.backoff import DEFAULT_BACKOFF
from traffik.exceptions import QuotaAppliedError, QuotaCancelledError, QuotaError
from traffik.quota_entries import QueuedHit
from traffik.quota_settling import QuotaSettling
from traffik.throttle_settings import check_cost
from traffik.typing import ApplyOnError

if TYPE_CHECKING:
    from traffik.throttles import Throttle

__all__ = ["QuotaContext"]


class QuotaContext(QuotaSettling):
    """Queued throttle hits, applied together on exit (or `apply()`), or not at all (`cancel()`).

    `throttle.quota(connection, context)` makes one bound to `throttle` (its owner), so
    `quota(cost=2)` queues a hit of the owner; `QuotaContext(connection)` is unbound and
    needs a throttle per call. `consume(throttle=None, cost=None, context=None, *,
    skip_handler=None, retry=0, retry_on=None, backoff=None, base_delay=1.0)` (also spelled
    `quota(...)`) queues a hit and returns the context, which is also awaitable, so
    `await quota(cost=2)` works as traffik 1.2's docs write it. Consecutive hits of one
    throttle with the same context and settings add up into one entry; at apply time every
    hit on one bucket is one item of the decision, whatever the order, context or settings.

    On exit without an exception the hits are applied (unless `apply_on_exit=False`); on an
    exception only when `apply_on_error` is True or names its type, and otherwise the
    context is cancelled: its hits dropped, any later use raising `QuotaCancelledError`.
    A nested context
    (`quota.nested()`, also `quota.quota()`) hands its hits to its parent on exit (`merge()`;
    with `apply_on_exit=False` the parent takes them when it applies), and drops them when
    its block fails (traffik 1.2 let the parent apply them); its own `apply()` decides them
    at once and detaches it from the parent. `apply()`
    returns whether the hits were admitted (a refusal the handler did not raise for, e.g.
    `skip_handler=True`); once applied, admitted or refused, the context is settled. A
    failure while deciding (a store error the throttle's `on_error="raise"` lets through) is
    retried as a whole, since nothing was taken: up to the largest `retry` of the entries,
    when that entry's `retry_on` (None: any error; exception types; or a callable, sync or
    async, of `{connection, exception, attempt, cost, context}`) says so, after its
    `backoff(attempt, base_delay)` seconds.

    Args:
        connection: The request or websocket the hits are for.
        context: The default context of every queued hit (a hit's own context is laid over
            it).
        owner: The throttle a hit queued without one is of; None for an unbound context.
        apply_on_error: Whether the hits are applied when the block raises: True, False,
            or the exception type (or tuple of types) that still applies them.
        apply_on_exit: Whether the hits are applied when the block exits without an
            exception.
        lock: Accepted for traffik 1.2 code; changes nothing (a string warns).
        lock_config: Accepted for traffik 1.2 code; changes nothing (a non-empty one
            warns).
        parent: The context this one is nested in (see `nested`); None for a top-level
            context.

    Raises:
        ConfigurationError: When `apply_on_error` is none of those (a type's name, a list,
            an exception instance), here or when it is set later.
    """

    __slots__ = ()  # (the state's slots are `QuotaState`'s)

    def __init__(
        self,
        connection: Any,
        context: Optional[Mapping[str, Any]] = None,
        *,
        owner: Optional[Throttle] = None,
        apply_on_error: ApplyOnError = False,
        apply_on_exit: bool = True,
        lock: Union[bool, str, None] = None,
        lock_config: Optional[Mapping[str, Any]] = None,
        parent: Optional[QuotaContext] = None,
    ) -> None:
        if isinstance(lock, str) or lock_config:
            warnings.warn(
                "QuotaContext takes no lock (its apply is one atomic decision), so lock= and "
                "lock_config= change nothing; to serialise your own code, hold "
                "`backend.lock(name)` yourself",
                DeprecationWarning,
                stacklevel=3 if owner is not None else 2,
            )
        self.connection = connection
        self._default_context = dict(context or {})
        self.owner = owner
        self.apply_on_error = apply_on_error
        self.apply_on_exit = apply_on_exit
        self.lock_config = dict(lock_config or {})
        self.parent = parent
        self._queue: list[QueuedHit] = []
        self._children: dict[int, QuotaContext] = {}
        self._consumed = False
        self._cancelled = False
        self._entered = False
        self._admitted: Optional[bool] = None
        self._applied_cost = 0
        self._applying: Optional[asyncio.Future[bool]] = None  # (the apply under way)
        self._deciding = False  # (whether it has asked the stores)
        self._depth: int = 0 if parent is None else parent.depth + 1
        if parent is not None:
            parent._children[id(self)] = self

    def __repr__(self) -> str:
        owner = f"owner={self.owner.uid!r} " if self.owner is not None else ""
        state = "cancelled" if self._cancelled else "consumed" if self._consumed else "active"
        return (
            f"<QuotaContext {owner}queued={len(self._queue)} state={state} "
            f"nested={self.is_nested} depth={self._depth}>"
        )

    # -- queueing --------------------------------------------------------------------------

    def consume(
        self,
        throttle: Optional[Throttle] = None,
        cost: Optional[int] = None,
        context: Optional[Mapping[str, Any]] = None,
        *,
        skip_handler: Optional[bool] = None,
        retry: int = 0,
        retry_on: Any = None,
        backoff: Optional[Callable[[int, float], float]] = None,
        base_delay: float = 1.0,
    ) -> QuotaContext:
        """Queue a hit of `throttle` (default: the owner); returns the context (awaitable).

        Args:
            throttle: The throttle to hit; None for the owner.
            cost: The units the hit spends (a whole number >= 0; 0 queues nothing); None
                for the throttle's cost (its cost function, resolved at apply time).
            context: Context for the hit, laid over the context's default.
            skip_handler: Whether a refusal is not answered by the throttle's handler (the
                apply then returns False); None for the throttle's setting.
            retry: How many times a failed apply is retried for this hit.
            retry_on: Which failures are retried: None for any, exception types, or a
                callable (sync or async) of `{connection, exception, attempt, cost,
                context}` returning whether to retry.
            backoff: A callable `(attempt, base_delay) -> seconds` giving the wait before a
                retry; None for the default backoff.
            base_delay: The base delay passed to `backoff`, in seconds.

        Returns:
            This context, which can be awaited.

        Raises:
            QuotaCancelledError: When the context was cancelled.
            QuotaAppliedError: When the context is already applied or merged, or being
                applied (a hit queued then would be left out of the decision).
            ValueError: When no throttle is given and the context has no owner.
            TypeError: When `throttle` is not a throttle.
            ConfigurationError: When `cost` is not a valid cost.
        """
        self._check_open("queue hits on")
        target = self._target(throttle, "consume")
        if target is None:
            raise ValueError(
                "QuotaContext.consume(): no throttle given, and the context is not bound to one; "
                "pass the throttle, or create the context with `throttle.quota(connection)`"
            )
        if cost is not None:
            cost = check_cost(cost, f"QuotaContext.consume({target!r})")
            if cost == 0:
                return self
        elif not target.dynamic_cost:
            cost = target.cost
        ctx = {**self._default_context, **context} if context else self._default_context
        entry = QueuedHit(
            target,
            cost,
            ctx or None,
            skip_handler,
            retry,
            retry_on,
            DEFAULT_BACKOFF if backoff is None else backoff,
            base_delay,
        )
        last = self._queue[-1] if self._queue else None
        if last is not None and last.joins(entry):
            last.cost += entry.cost  # type: ignore[operator]
        else:
            self._queue.append(entry)
        return self

    __call__ = consume

    def __await__(self) -> Generator[Any, None, QuotaContext]:
        """`await quota(cost=2)`: the queued context itself (queueing never waits).

        Returns:
            A generator whose result is this context.
        """
        return _itself(self).__await__()

    # -- nesting ---------------------------------------------------------------------------

    def nested(
        self,
        context: Optional[Mapping[str, Any]] = None,
        *,
        apply_on_error: Optional[ApplyOnError] = None,
        apply_on_exit: bool = True,
        lock: Union[bool, str, None] = None,
        lock_config: Optional[Mapping[str, Any]] = None,
    ) -> QuotaContext:
        """A child context: same connection and owner, this context's defaults overlaid by
        `context`; `apply_on_error` None inherits this one's.

        Args:
            context: Context laid over this context's default.
            apply_on_error: Whether the child's hits are handed over when its block raises
                (as in `QuotaContext`); None for this context's setting.
            apply_on_exit: Whether the child's hits are handed over when its block exits
                without an exception.
            lock: Accepted for traffik 1.2 code; changes nothing.
            lock_config: Accepted for traffik 1.2 code; changes nothing.

        Returns:
            The child `QuotaContext`.

        Raises:
            ConfigurationError: When `apply_on_error` is not a valid one.
            QuotaCancelledError: When this context was cancelled.
            QuotaAppliedError: When this context is already applied or merged, or being
                applied: the child's hits would be charged to nobody.
        """
        self._check_open("nest a context in")
        return QuotaContext(
            self.connection,
            {**self._default_context, **context} if context else self._default_context,
            owner=self.owner,
            apply_on_error=self.apply_on_error if apply_on_error is None else apply_on_error,
            apply_on_exit=apply_on_exit,
            lock=lock,
            lock_config=lock_config,
            parent=self,
        )

    quota = nested

    def merge(self) -> None:
        """Hand the queued hits to the parent, uncounted (it applies them); settles this one.

        Raises:
            QuotaError: When the context has no parent.
            QuotaCancelledError: When the context or its parent was cancelled.
            QuotaAppliedError: When the context is already applied or merged, or its parent
                is (or is being applied): its hits would be charged to nobody.
        """
        if self.parent is None:
            raise QuotaError("cannot merge a quota context that has no parent")
        self._check_open("merge")
        self.parent._check_open("merge a nested context into")
        self._fold_children()
        self.parent._queue.extend(self._queue)
        self._queue = []
        self._consumed = True
        self._detach()

    def _fold_children(self) -> None:
        for child in list(self._children.values()):
            if child.active and child._applying is None:  # (one applying detaches itself)
                child.merge()

    def _check_open(self, doing: str) -> None:
        """Raise unless hits may still be queued here: not cancelled, settled or applying."""
        if self._cancelled:
            raise QuotaCancelledError(f"cannot {doing} a cancelled quota context")
        if self._consumed:
            raise QuotaAppliedError(f"cannot {doing} a quota context already applied or merged")
        if self._applying is not None:
            raise QuotaAppliedError(
                f"cannot {doing} a quota context being applied (by another task): its "
                "decision is already under way; use a new context for later hits"
            )

    def _detach(self) -> None:
        if self.parent is not None:
            self.parent._children.pop(id(self), None)

    # -- the block -------------------------------------------------------------------------

    async def __aenter__(self) -> QuotaContext:
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        if not self._entered or not self.active:
            return
        if exc_type is None:
            settle = self.apply_on_exit
        elif isinstance(self.apply_on_error, bool):
            settle = self.apply_on_error
        else:
            settle = issubclass(exc_type, self.apply_on_error)
        if not settle:
            if exc_type is not None and self._applying is None:
                # Its work failed: its hits are dropped, and it takes no more (a parent
                # must not apply them, nor a later `apply()`). One being applied settles.
                await self.cancel()
            return
        if self.is_nested:
            self.merge()
        else:
            await self.apply()


async def _itself(context: QuotaContext) -> QuotaContext:
    return context
