"""How a quota context settles: its hits applied as one decision, or cancelled.

A base of `QuotaContext`, on its state (`traffik.quota_state.QuotaState`). `apply` decides
every queued hit (and open children's) in one step (`traffik.together.hit_together`), in a
task of its own: one apply at a time per context, a failure before anything was taken
retried whole as the entries say (`retry`, `retry_on`, `backoff`), and a caller cancelled
once the decision started leaves it to end and settle the context. `cancel` drops the hits
instead.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from traffik.config import THROTTLED_STATE_KEY
from traffik.exceptions import QuotaCancelledError
from traffik.quota_entries import one_per_bucket, retried
from traffik.quota_state import QuotaState
from traffik.together import Entry, hit_together

__all__ = ["QuotaSettling"]

_NOT_RETRIED: tuple[type[BaseException], ...] = (
    asyncio.CancelledError,
    KeyboardInterrupt,
    SystemExit,
)


_APPLYING: set[asyncio.Future[bool]] = set()
"""The applies under way (the event loop keeps only weak references to tasks, and one whose
caller was cancelled has no other)."""


def _http_exception() -> tuple[type[BaseException], ...]:
    """Starlette's `HTTPException` (a refusal's 429), never retried; nothing without Starlette."""
    try:
        from starlette.exceptions import HTTPException
    except ImportError:  # pragma: no cover - the throttles need Starlette anyway
        return ()
    return (HTTPException,)


class QuotaSettling(QuotaState):
    """Applying and cancelling queued hits, for `QuotaContext`."""

    __slots__ = ()

    if TYPE_CHECKING:

        def _check_open(self, doing: str) -> None: ...

        def _detach(self) -> None: ...

        def _fold_children(self) -> None: ...

    async def cancel(self) -> None:
        """Drop every queued hit (and active children's); idempotent.

        Raises:
            QuotaAppliedError: When the context is already applied or merged, or being
                applied.
        """
        if self._cancelled:
            return
        self._check_open("cancel")
        for child in list(self._children.values()):
            if child.active and child._applying is None:  # (one applying detaches itself)
                await child.cancel()
        self._queue = []
        self._cancelled = True
        self._detach()

    discard = cancel

    async def apply(self) -> bool:
        """Decide every queued hit (and active children's) now, as one: admitted or refused
        together. Idempotent once settled (returns the first answer); called while another
        task applies the context, it waits for that apply and answers as it settled (or,
        when it failed and took nothing, applies the context itself). Its caller cancelled
        before the decision started (a cost callable, a wait to retry), nothing is charged
        and the context stays open; once it started, a store may have charged the hits, so
        the decision goes on without the caller and settles the context as it ends.

        Returns:
            True when the hits were admitted; False when refused and the handler did not
            raise (`skip_handler=True`, say).

        Raises:
            QuotaCancelledError: When the context was cancelled.
            Exception: The refusal's exception from the throttle's handler (a 429
                `HTTPException` by default), or the failure of the last attempt.
        """
        while self._applying is not None:  # (another task's apply, or a cancelled one's)
            await asyncio.wait((self._applying,))  # (its outcome is read below, not raised)
        if self._cancelled:
            raise QuotaCancelledError("cannot apply a cancelled quota context")
        if self._consumed:
            return bool(self._admitted)
        self._fold_children()
        applying = self._applying = asyncio.ensure_future(self._apply())
        _APPLYING.add(applying)
        applying.add_done_callback(self._applied)
        try:
            return await asyncio.shield(applying)
        except asyncio.CancelledError:
            if not self._deciding:  # nothing asked of a store yet: nothing taken, still open
                applying.cancel()
            raise  # (else the decision goes on, and settles the context as it ends)

    def _applied(self, applying: asyncio.Future[bool]) -> None:
        """The end of an apply, however it ended (its outcome retrieved: a cancelled
        caller's is nobody's to raise)."""
        _APPLYING.discard(applying)
        if self._applying is applying:
            self._applying = None
        if not applying.cancelled():
            applying.exception()

    async def _apply(self) -> bool:
        """`apply` of an open context, its children folded in, in a task of its own: the
        decision, retried whole as the entries say. A cancellation of the caller stops it
        until a decision starts, not after: a store may then have charged the hits, and
        only the decision's end tells the context whether it did."""
        entries = self._queue
        costs = [await entry.resolved_cost(self.connection) for entry in entries]
        hits = one_per_bucket(entries, costs, self.connection)
        policy = max(entries, key=lambda entry: entry.retry) if entries else None
        attempt = 0
        while True:
            attempt += 1
            try:
                admitted = await self._decide(hits)
                break
            except _NOT_RETRIED:
                raise
            except BaseException as exc:
                if self._admitted is not None or isinstance(exc, _http_exception()):
                    raise
                if policy is None or attempt > policy.retry:
                    raise
                if not await retried(policy, exc, attempt, self.connection, sum(costs)):
                    raise
                await asyncio.sleep(policy.backoff(attempt, policy.base_delay))
        return admitted

    async def _decide(self, hits: list[Entry]) -> bool:
        """One decision over `hits`; settles the context before a refusal is answered."""
        state = self.connection.scope.setdefault("state", {})
        state[THROTTLED_STATE_KEY] = 0.0
        self._deciding = True
        try:
            taken = await hit_together(hits, self.connection, whole=True)
        finally:
            self._deciding = False
            if state.get(THROTTLED_STATE_KEY):
                self._settle(False, 0)
        if self._admitted is None:
            self._settle(True, taken)
        return bool(self._admitted)

    def _settle(self, admitted: bool, cost: int) -> None:
        self._admitted = admitted
        self._applied_cost = cost
        self._consumed = True
        self._queue = []
        self._detach()
