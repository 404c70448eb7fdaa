"""Several throttles on one connection decided as one: `throttled(a, b)` and the middleware.

Enforced throttles that share a backend are one step there (`evaluate_all`): the connection
is admitted only if every one of them admits it, and a refusal charges none of them (a
refusing fixed-window counter included). Hits that land on one bucket (the same key, rate
and strategy: a throttle given twice, two throttles sharing a uid, a quota's hits with
different contexts) are one item of that step, their costs summed. The step is planned once
per backend, throttles, rates, costs and clients' keys (`_plan`, at most `PLANS_KEPT`), and
a backend that can decide it at once (`items_decider`: in memory) does, without a coroutine.
Groups on different backends are decided in order; when a later group refuses, what the
earlier ones took is given back. A throttle whose strategy cannot give units back (a
strategy of your own: `gives_back`) is decided alone with `hit`, after all the others (such
throttles in their given order): it is asked only once every other admitted the connection,
and its refusal gives their units back. What it took stays taken when one decided after it
refuses (a second strategy of your own) or the decision fails after it: logged, once per
interval (`_give_back`).

A refused connection is answered by the first step that refuses, in that order: within a
step, by the throttle that refused with the longest wait (the first such, in the given
order): the wait until every one of them would admit it, under that throttle's own policy
and headers. So a throttle with a strategy of your own answers only when every other
admitted.

Each throttle of a step that cannot be prepared (an identifier raised, say) or that the store
failed with an error of its own (not an outage) is decided alone with `hit` too, so that each
one's `on_error` applies to its own failure. When the step fails on an outage (a
`BackendConnectionError`: the store timed out or is unreachable, or its circuit is open),
each throttle is answered by its `on_error` at once, in order up to the first that refuses,
without asking the store again: the request waits for one timeout, not one per throttle. So
it is when the store has no room for the step's new keys (`BackendCapacityError`: it writes
none of them), which deciding each alone would write in part.
Decisions over several store operations run to their end once begun, even if the caller is
cancelled meanwhile (`finished`): the connection is charged on every throttle or on none.

A shadow throttle (the entry's `shadow`, else the throttle's, else its backend's) is never
part of that step: once the enforced ones admit the connection, each shadow throttle is
decided on its own, counting and reporting as it would enforcing. A connection the enforced
ones refuse is not shown to the shadow ones (enforcing, they would have taken nothing from
it either).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, Callable, Optional

from traffik._connection_kinds import check_kind
from traffik.backends.store_locks import finished
from traffik.config import THROTTLED_STATE_KEY
from traffik.exceptions import BackendCapacityError, BackendConnectionError, ConfigurationError
from traffik.logs import QuietLog, object_key
from traffik.outcomes import CHARGES_KEY, Charge, Noted
from traffik.strategies.steps import (
    WHAT_GIVES_BACK,
    Combined,
    Item,
    combine,
    counts_refused,
    gives_back,
    is_counter,
)
from traffik.throttle_steps import ThrottleSteps

if TYPE_CHECKING:
    from starlette.responses import Response

    from traffik.backends.base import ThrottleBackend
    from traffik.decision import Decision
    from traffik.rates import Rate
    from traffik.throttles import Throttle

__all__ = ["Entry", "hit_together"]

logger = logging.getLogger("traffik")
_WHOLE_STEP_ERRORS = (BackendConnectionError, BackendCapacityError)
"""The store's failures of a whole step, which each throttle answers by its `on_error` at once
(module docstring)."""
_quiet = QuietLog(logger, sources="throttles")


class Entry:
    """One throttle to hit: on `connection` (the middleware gives each its own view of the
    scope), with `cost` (None: its own), the call's `context`, `skip_handler` and `shadow` (None: the throttle's own)."""

    __slots__ = ("connection", "context", "cost", "shadow", "skip_handler", "throttle")

    def __init__(
        self,
        throttle: Throttle,
        connection: Any,
        cost: Optional[int] = None,
        context: Optional[Mapping[str, Any]] = None,
        skip_handler: Optional[bool] = None,
        shadow: Optional[bool] = None,
    ) -> None:
        self.throttle = throttle
        self.connection = connection
        self.cost = cost
        self.context: Mapping[str, Any] = context or {}
        self.skip_handler = skip_handler
        self.shadow = shadow

    async def hit(self, response: Optional[Response]) -> None:
        await self.throttle.hit(
            self.connection,
            cost=self.cost,
            context=self.context or None,  # (none given: the throttle's own, not a copy)
            skip_handler=self.skip_handler,
            response=response,
            shadow=self.shadow,
        )


def _refused(connection: Any) -> bool:
    state = connection.scope.get("state")
    return bool(state and state.get(THROTTLED_STATE_KEY))


async def hit_together(
    entries: Sequence[Entry],
    connection: Any,
    *,
    response: Optional[Response] = None,
    whole: bool = False,
) -> int:
    """Hit every entry's throttle as one decision (module docstring); `connection` is the one
    whose state the entries share. Returns the units taken (0 when refused). With `whole`
    (a quota context's apply), even one entry is such a decision: a fixed window that refuses
    it keeps nothing, where a hit decided alone counts what it refuses.

    Raises:
        ConfigurationError: When a throttle does not limit `connection`'s kind.
    """
    kind = connection.scope.get("type")
    for entry in entries:
        if kind in entry.throttle.refused_scopes:
            check_kind([entry.throttle for entry in entries], connection)
    groups: dict[int, tuple[ThrottleBackend, list[Entry]]] = {}
    last: list[Entry] = []  # (strategies that cannot give units back: decided after the others)
    watched: list[tuple[ThrottleBackend, Entry]] = []
    for entry in entries:
        throttle = entry.throttle
        if throttle._disabled:
            continue
        if entry.context:
            entry.context = {**throttle.context, **entry.context}
        else:
            entry.context = throttle.context
        gate = throttle._gate
        if gate is not None and not await gate.allows(entry.connection, entry.context):
            continue
        backend = throttle._hit_backend or throttle.get_backend(entry.connection)
        if throttle.watches(backend, entry.shadow):
            watched.append((backend, entry))
        elif not gives_back(throttle.strategy):
            last.append(entry)
        else:
            found = groups.get(id(backend))
            if found is None:
                groups[id(backend)] = (backend, [entry])
            else:
                found[1].append(entry)
    state = connection.scope.setdefault("state", {})
    charges = state.setdefault(CHARGES_KEY, [])  # every admitting throttle notes its charge
    earlier = charges[:] if charges else None  # (kept alive: `_since` tells them by identity)
    steps: list[tuple[ThrottleBackend, list[Entry], bool]] = []
    operations = len(watched) + len(last)  # (store operations: one per group as one step)
    # A group is one step when it has several throttles or is one part of several (decided
    # alone, a refusing fixed window would keep the refused hit).
    several = whole or len(groups) + len(last) > 1
    for backend, group in groups.values():
        one = several or len(group) > 1
        steps.append((backend, group, one))
        operations += 1 if one else len(group)
    decide = _decide(steps, last, watched, connection, charges, earlier, response)
    if operations < 2:
        return await decide
    taken, error = await finished(_outcome(decide), "several throttles as one")
    if error is not None:
        raise error
    return taken


def _as_one_step(group: list[Entry], several: bool = False) -> bool:
    """Whether a backend's `group` of entries, whatever their strategies, is decided in one
    step, else hit by hit: a group of several throttles, or one of several groups
    (`several`), all of whose strategies give units back (`gives_back`). `hit_together`
    sets the others aside before grouping; `QuotaState.check` asks this of its groups."""
    return (several or len(group) > 1) and all(
        gives_back(entry.throttle.strategy) for entry in group
    )


async def _outcome(decide: Awaitable[int]) -> tuple[int, Optional[Exception]]:
    """`decide`'s result or error, returned: what it raises for a caller who left meanwhile
    (the handler's 429, `on_error`'s answer) is the answer to nobody, dropped unlogged."""
    try:
        return await decide, None
    except Exception as exc:
        return 0, exc


async def _decide(
    steps: list[tuple[ThrottleBackend, list[Entry], bool]],
    last: list[Entry],
    watched: list[tuple[ThrottleBackend, Entry]],
    connection: Any,
    charges: list[Noted],
    earlier: Optional[list[Noted]],
    response: Optional[Response],
) -> int:
    """The enforced groups in order (each with whether it is decided as one step), then the
    entries whose strategy cannot give units back (`last`), then the shadow entries; the
    units taken (0: refused). A refusal or a failure gives back what was taken before it."""
    kept: list[Throttle] = []  # (admitted by `last`: what they took stays taken)
    try:
        for backend, group, one in steps:
            if one:
                await _as_one(group, backend, response)
            else:
                await _each(group, response)
            if _refused(connection):
                await _give_back(charges, earlier)
                return 0
        for entry in last:
            await entry.hit(response)
            if _refused(connection):
                await _give_back(charges, earlier, kept)
                return 0
            kept.append(entry.throttle)
        noted_here = charges if earlier is None else charges[_since(charges, earlier) :]
        taken = 0
        for noted in noted_here:
            taken += noted[4]
        for backend, entry in watched:
            taken += await _alone(entry, backend, response, charges)
    except BaseException:
        await _give_back(charges, earlier, kept)
        raise
    return taken


def _since(charges: list[Noted], earlier: Optional[list[Noted]]) -> int:
    """Where the charges noted since `earlier` (the list as it was; None: empty) begin in
    `charges`. Noting appends; on a WebSocket it also removes the charge the same throttle
    noted for an earlier message (`note`), so the list is what is left of `earlier`, then
    the new charges: they are the tail after the last of `earlier` still there."""
    if earlier is None:
        return 0
    before = {id(noted) for noted in earlier}
    start = len(charges)
    while start and id(charges[start - 1]) not in before:
        start -= 1
    return start


async def _each(group: list[Entry], response: Optional[Response]) -> None:
    """Hit the group's throttles one by one, up to the first that refuses."""
    for entry in group:
        await entry.hit(response)
        if _refused(entry.connection):
            return


async def _alone(
    entry: Entry, backend: ThrottleBackend, response: Optional[Response], charges: list[Noted]
) -> int:
    """Decide a shadow entry on its own (it never refuses); the units it took."""
    throttle = entry.throttle
    prepared, started = None, None
    try:
        prepared = await throttle._prepare(entry.connection, entry.context, entry.cost, backend)
        if prepared is None:
            return 0
        rates, cost, key = prepared
        started = perf_counter()
        decision = await throttle._step(key, rates, cost, backend)
    except ConfigurationError:
        raise
    except Exception as exc:
        earlier = charges[:]
        if prepared is not None and isinstance(exc, BackendConnectionError):
            await _on_error(entry, exc, backend, prepared, response, started)
        else:  # decided again by `hit`, where its on_error applies
            _quiet.log(
                logging.INFO,
                ("alone", object_key(backend), type(exc)),
                "deciding shadow throttle %r on %r failed (%s: %s); hitting it",
                throttle.uid,
                backend,
                type(exc).__name__,
                exc,
                source=throttle.uid,
            )
            await entry.hit(response)
        return sum(noted[4] for noted in charges[_since(charges, earlier) :])
    await throttle.answer(
        entry.connection,
        decision,
        rates,
        key,
        entry.context,
        backend,
        entry.skip_handler,
        response,
        cost,
        started,
        True,
    )
    return cost if decision.allowed else 0


async def _on_error(
    entry: Entry,
    exc: Exception,
    backend: ThrottleBackend,
    prepared: tuple[tuple[Rate, ...], int, str],
    response: Optional[Response],
    started: Optional[float],
) -> None:
    """Answer `entry` by its throttle's `on_error` for the outage `exc` of `backend`, without
    asking the store again (`prepared`: its rates, cost and key), as its `hit` would."""
    await entry.throttle._answer_failure(
        entry.connection,
        exc,
        entry.context,
        entry.cost,
        backend,
        prepared,
        entry.skip_handler,
        response,
        started,
        entry.shadow,
    )


async def _as_one(
    group: list[Entry], backend: ThrottleBackend, response: Optional[Response]
) -> None:
    """Decide `group` (throttles on `backend`) in one step, then let each answer its part."""
    prepared = []
    started = None  # (set once every entry is prepared: then a failure is the step's)
    try:
        for entry in group:
            throttle, connection = entry.throttle, entry.connection
            # (`_prepare`, without its coroutine for a key remembered per peer and route)
            ready = throttle._prepared(connection, entry.context, entry.cost, backend)
            if ready is None:
                ready = await throttle._resolved(connection, entry.context, entry.cost, backend)
            if ready is not None:
                prepared.append((entry, *ready))
        plan = _plan(backend, prepared)
        started, asked_at = perf_counter(), None
        decision = plan.decide() if plan.decide is not None else None  # (its time set)
        if decision is None and plan.items:
            asked_at = backend.now_ms()
            decision = await backend.evaluate_all(plan.items)
        shares = plan.shares
    except ConfigurationError:
        raise
    except Exception as exc:
        if started is not None and (isinstance(exc, _WHOLE_STEP_ERRORS) or len(group) == 1):
            # (the store failed the whole step, or the one throttle's: its on_error answers)
            for entry, rates, cost, key in prepared:  # each on_error, at once
                await _on_error(entry, exc, backend, (rates, cost, key), response, started)
                if _refused(entry.connection):
                    return
            return
        # decided alone, each throttle's on_error applies
        _quiet.log(
            logging.INFO,
            ("as one", object_key(backend), type(exc)),
            "deciding %d throttles as one on %r failed (%s: %s); deciding each",
            len(group),
            backend,
            type(exc).__name__,
            exc,
        )
        await _each(group, response)
        return
    if decision is None:
        return
    if not decision.allowed and len(plan.items) == 1:
        await _uncount(backend, plan.items[0])
    parts = decision.parts if isinstance(decision, Combined) else (decision,)
    # A refusal is answered by the throttle whose item refused with the longest wait (the
    # first such, in order): its policy, its `RateLimit` and the wait agree.
    binding = decision.refused if isinstance(decision, Combined) else 0
    for (entry, rates, cost, key), share in zip(prepared, shares):
        if not decision.allowed and binding not in share:
            continue
        mine = parts[share[0]] if len(share) == 1 else combine([parts[at] for at in share])
        if mine.at is None:  # (when it was decided, or asked: a refund reads what it holds)
            mine.at = asked_at if decision.at is None else decision.at
        await entry.throttle.answer(
            entry.connection,
            mine,
            rates,
            key,
            entry.context,
            backend,
            entry.skip_handler,
            response,
            cost,
            started,
            entry.shadow,
        )
        if not decision.allowed:
            return


async def _uncount(backend: ThrottleBackend, item: Item) -> None:
    """Give back what a refusing step of one item kept: a fixed window decided as its step's
    one item counts the hit it refuses, as it does alone (`counts_refused`), but this one is
    part of a larger decision (several throttles, or hits summed on one bucket), which
    takes nothing when refused (best effort, logged)."""
    if counts_refused(is_counter(item.strategy), item.rate, item.cost):
        try:
            await backend.refund_all([item])
        except Exception:
            logger.exception("%r could not be given back after a refusal", item)


class _Plan:
    """A group's step for one set of keys, made once (`_plan`): the items (those on one
    bucket made one), where each entry's items went, the backend's `items_decider` for them,
    and the objects the plan's identity is made of, kept alive so that no other takes their
    ids while it is kept."""

    __slots__ = ("decide", "held", "items", "shares")

    def __init__(self, items: list[Item], shares: list[list[int]], held: list[Any]) -> None:
        self.items = items
        self.shares = shares
        self.held = held
        self.decide: Optional[Callable[[], Optional[Decision]]] = None


PLANS_KEPT = 4096
"""Groups' steps `_plan` keeps (one per backend, throttles, rates, costs and keys) before
forgetting them all."""
_plans: dict[tuple[Any, ...], _Plan] = {}


def _plan(
    backend: ThrottleBackend, prepared: list[tuple[Entry, tuple[Rate, ...], int, str]]
) -> _Plan:
    """The step of `prepared` (each entry with its rates, cost and key) on `backend`: made
    once per backend, throttles, strategies, rates, costs and keys, and kept (`PLANS_KEPT`)
    unless an item's strategy binds per-request input into its key, or a throttle makes
    its items its own way."""
    seen: list[Any] = [id(backend)]
    for entry, rates, cost, key in prepared:
        throttle = entry.throttle
        seen += (id(throttle), id(throttle.strategy), id(rates), cost, key)
    identity = tuple(seen)
    plan = _plans.get(identity)
    if plan is not None:
        return plan
    items, shares = _one_item_per_bucket(
        [entry.throttle.items(key, rates, cost, backend) for entry, rates, cost, key in prepared]
    )
    held: list[Any] = [backend]
    kept = True
    for entry, rates, _, _ in prepared:
        throttle = entry.throttle
        held += (throttle, throttle.strategy, rates)
        kept = kept and (
            getattr(throttle.strategy, "bind", None) is None
            and type(throttle).items is ThrottleSteps.items
        )
    plan = _Plan(items, shares, held)
    if items:
        plan.decide = backend.items_decider(items)
    if kept:
        if len(_plans) >= PLANS_KEPT:
            _plans.clear()
        _plans[identity] = plan
    return plan


def _one_item_per_bucket(per_entry: list[list[Item]]) -> tuple[list[Item], list[list[int]]]:
    """The entries' items with those on one bucket (key, rate and strategy) made one, their
    costs summed (two items on one bucket in one step would each see the state before the
    other), and where each entry's items went."""
    items: list[Item] = []
    placed: dict[str, list[int]] = {}  # (by key first: a rate or strategy compares slowly)
    shares: list[list[int]] = []
    for entry_items in per_entry:
        share = []
        for item in entry_items:
            key = item.key
            at = None
            found = placed.get(key)
            if found is None:
                found = placed[key] = []
            else:
                for index in found:
                    first = items[index]
                    if first.rate == item.rate and first.strategy == item.strategy:
                        at = index
                        items[at] = Item(first.strategy, key, first.rate, first.cost + item.cost)
                        break
            if at is None:
                at = len(items)
                found.append(at)
                items.append(item)
            share.append(at)
        shares.append(share)
    return items, shares


async def _give_back(
    charges: list[Noted], earlier: Optional[list[Noted]], kept: Sequence[Throttle] = ()
) -> None:
    """Give back the charges noted since `earlier` (`_since`), each on the bucket it was
    taken from, before a refusal (best effort, logged). Those of a strategy that cannot give
    units back are left: `kept` names the throttles that admitted with one, each logged once
    per interval."""
    start = _since(charges, earlier)
    taken = charges[start:]
    del charges[start:]
    for throttle in kept:
        _quiet.log(
            logging.WARNING,
            ("kept", object_key(throttle)),
            "%r keeps what it took from a connection refused after it admitted it: its "
            "strategy %r cannot give units back, so throttles decided as one take all or "
            "nothing only with at most one such strategy among them; %s",
            throttle,
            throttle.strategy,
            WHAT_GIVES_BACK,
            source=throttle.uid,
        )
    for noted in taken:
        if not gives_back(noted[0].strategy):
            continue
        charge = Charge(*noted)
        try:
            await charge.give_back()
        except Exception:
            logger.exception("%r could not be given back after a refusal", charge)
