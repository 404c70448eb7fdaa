"""`ScriptSteps`: the Redis backend's decisions and refunds, one `EVALSHA` for any number of items."""

from __future__ import annotations

import contextlib
import math
import struct
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional

from redis.crc import key_slot
from traffik.backends.lanes import Lanes
from traffik.backends.redis.native import native
from traffik.backends.redis.scripts import (
    COUNTER,
    EVERY_SCRIPT,
    PROGRAMS,
    Script,
    evalsha,
    with_counter,
)
from traffik.backends.steps import LockedSteps
from traffik.backends.store_locks import finished
from traffik.decision import Decision
from traffik.exceptions import ConfigurationError
from traffik.strategies.base import EXACT_LIMIT, settled
from traffik.strategies.steps import IN_PLACE_STATE, Combined, combine

if TYPE_CHECKING:
    from traffik.backends.health import StoreCircuit
    from traffik.rates import Rate
    from traffik.strategies.base import StateStrategy
    from traffik.strategies.steps import Item

__all__ = ["ScriptSteps"]

_NUMBERS = 5
"""How many numbers an item gives the programs: limit, period, cost and two parameters."""
_ITEM = struct.Struct(f"<B{_NUMBERS}d")
"""An item as the programs read it: its code, then its numbers (`lua/decide.lua`)."""
_NOW = struct.Struct("<d")
_SERVER_CLOCK = _NOW.pack(math.nan)
"""`now` meaning: read the server's clock (TIME)."""
_FIRST_TABLE = 2
"""Where in ARGV the first table goes (`script_table`, after the items' bytes): an item with
a table carries its place as its last number (y), packed for the first and changed for the
others (`_step`)."""
_COALESCED = frozenset(
    {"sliding_window_counter", "token_bucket", "leaky_bucket", "gcra", "time_of_day"}
)
"""The scripts whose concurrent hits on one key a throttle sends together (mode 's' of
`lua/decide.lua`): their states have a fixed size and are stored whole."""
_PACKED_MAX = 1024
_YES = (b"1", "1")


class _Packed:
    """An item's bytes for the programs and its script (`data` None: no Lua for its strategy),
    and its table (`script_table`, None: none; its decisions then tell their limit). Kept by
    the identity of the strategy and rate objects (held here, so the identities stay valid):
    strategies and rates are configuration, not changed once in use."""

    __slots__ = ("data", "rate", "script", "strategy", "table")

    def __init__(
        self,
        strategy: Any,
        rate: Rate,
        data: Optional[bytes],
        script: str,
        table: Optional[bytes] = None,
    ) -> None:
        self.strategy = strategy
        self.rate = rate
        self.data = data
        self.script = script
        self.table = table


_PACKED: dict[tuple[int, int, int], _Packed] = {}


def _pack(strategy: Any, rate: Rate, cost: int) -> _Packed:
    packed = _PACKED.get((id(strategy), id(rate), cost))
    if packed is not None and packed.strategy is strategy and packed.rate is rate:
        return packed
    found = native(strategy)
    if found is None:
        packed = _Packed(strategy, rate, None, "")
    else:
        code, script = found
        table: Optional[bytes] = None
        if code:
            strategy.check_scale(rate)  # the programs' doubles are exact below 2**53
            numbers = [float(n) for n in strategy.script_args(rate, cost)]
            script_table = getattr(strategy, "script_table", None)
            if script_table is not None:
                day = script_table(rate)
                table = struct.pack(f"<{len(day)}d", *day)
        else:
            numbers = [float(rate.limit), float(rate.expire), float(cost)]
        most = _NUMBERS - (table is not None)  # (y: where its table is)
        if len(numbers) > most:
            raise ConfigurationError(
                f"{strategy!r}: script_args gives {len(numbers)} numbers; the Redis programs "
                f"take at most {most} (limit, period, cost and parameters"
                f"{', then where the script_table is' if table is not None else ''})"
            )
        numbers += [0.0] * (most - len(numbers))
        if table is not None:
            numbers.append(float(_FIRST_TABLE))
        packed = _Packed(strategy, rate, _ITEM.pack(code, *numbers), script, table)
    if len(_PACKED) >= _PACKED_MAX:
        del _PACKED[next(iter(_PACKED))]
    _PACKED[(id(strategy), id(rate), cost)] = packed
    return packed


def _program(packs: Sequence[_Packed]) -> Script:
    """The smallest program that runs every item: its strategy's (with the counter when there
    are counters besides), or the one with everything."""
    script = COUNTER
    counter = False
    for packed in packs:
        if packed.script == COUNTER:
            counter = True
        elif script == COUNTER:
            script = packed.script
        elif packed.script != script:
            return PROGRAMS[EVERY_SCRIPT]
    if script == COUNTER:
        return PROGRAMS[COUNTER]
    return PROGRAMS[with_counter(script) if counter else script]


def _fields(reply: Any) -> list[Any]:
    """A reply `allowed|wait|remaining|reset|allowed|...` split into its numbers (bytes or
    text, as the client decodes)."""
    return reply.split(b"|" if type(reply) is bytes else "|")


def _decision(fields: Sequence[Any], i: int, limit: int) -> Decision:
    """The decision whose four numbers start at `fields[i]`."""
    return Decision(
        fields[i] in _YES, int(fields[i + 1]), int(fields[i + 2]), int(fields[i + 3]), limit
    )


def _told(fields: Sequence[Any], i: int, _limit: int) -> Decision:
    """As `_decision`, for an item with a table: its limit is the fifth number."""
    return _decision(fields, i, int(fields[i + 4]))


def _decisions(reply: Any, packs: Sequence[_Packed]) -> list[Decision]:
    """Each item's decision from a reply `allowed|wait|remaining|reset|allowed|...`, with
    `|limit` after the four numbers of an item with a table (`lua/decide.lua`)."""
    fields = _fields(reply)
    decisions = []
    i = 0
    for packed in packs:
        if packed.table is None:
            decisions.append(_decision(fields, i, packed.rate.limit))
            i += 4
        else:
            decisions.append(_told(fields, i, packed.rate.limit))
            i += 5
    return decisions


def _arguments(mode: bytes, now: bytes, packs: Sequence[_Packed]) -> tuple[bytes, ...]:
    """ARGV for `packs` (`lua/decide.lua`): the mode, now and the items' bytes, then the
    items' tables, each item with a table told where its own is."""
    data = [mode, now]
    tables: list[bytes] = []
    for packed in packs:
        item = packed.data or b""
        if packed.table is not None:
            tables.append(packed.table)
            if len(tables) > 1:
                item = item[: -_NOW.size] + _NOW.pack(_FIRST_TABLE + len(tables) - 1)
        data.append(item)
    return (b"".join(data), *tables)


class _Group:
    """Items that one step decides: their places in the call, the items, keys and packs."""

    __slots__ = ("items", "keys", "packs", "places")

    def __init__(self) -> None:
        self.places: list[int] = []
        self.items: list[Item] = []
        self.keys: list[str] = []
        self.packs: list[_Packed] = []


def _groups(items: Sequence[Item], keys: Sequence[str], cluster: bool) -> list[_Group]:
    """The items by what decides them in one step, in the order each first appears: one
    `EVALSHA` per hash slot (one for all on a single node), the locked path for items with no
    Lua."""
    groups: dict[Optional[int], _Group] = {}
    for place, (item, key) in enumerate(zip(items, keys)):
        packed = _pack(item.strategy, item.rate, item.cost)
        slot = None if packed.data is None else key_slot(key.encode()) if cluster else 0
        group = groups.get(slot)
        if group is None:
            group = groups[slot] = _Group()
        group.places.append(place)
        group.items.append(item)
        group.keys.append(key)
        group.packs.append(packed)
    return list(groups.values())


class ScriptSteps(LockedSteps):
    """`evaluate`, `evaluate_all` and `refund_all` as one `EVALSHA` of a Lua program each.

    Items whose strategy has no Lua (a user's strategy, or a built-in one whose `transition`
    or `refund` was overridden) take the generic locked path (`LockedSteps`): a key is
    always decided by the same path, since the two store states differently. Items that one
    step cannot decide (keys on several cluster hash slots, items with Lua and items
    without) are decided group by group (`_in_order`).
    """

    cluster: bool
    circuits: tuple[StoreCircuit, ...]
    _server_clock: bool
    _prefix: str

    if TYPE_CHECKING:

        @property
        def initialized(self) -> bool: ...

        def _key(self, key: str) -> str: ...

        async def _run(
            self, operation: str, command: Callable[..., Awaitable[Any]], *args: Any
        ) -> Any: ...

        async def _ready(self, operation: str) -> None: ...

    def waited_decider(
        self, strategy: Any, rate: Rate, cost: int, kind: int
    ) -> Optional[Callable[[str], Awaitable[Decision]]]:
        """`strategy.decide` for one built-in state strategy, rate and cost, made once for a
        throttle's hot path: the same `EVALSHA` as `evaluate` makes, its item packed and its
        program chosen once (see `ThrottleBackend.waited_decider`). None for a counter, a
        strategy without Lua, or a rate or cost its `decide` answers without the store.

        Concurrent hits on one key (in one event loop) are coalesced when the strategy's
        state has a fixed size (`_COALESCED`): while one `EVALSHA` is in flight, the hits
        that arrive wait and then go together in one (mode 's' of `lua/decide.lua`), each
        decided in arrival order on the state the hits before it left, as if sequential
        (`traffik.backends.lanes`). When the `EVALSHA` in flight fails on an outage (a
        timeout, say), the hits waiting behind it fail with it at once.

        A decision goes through `strategy.decide` instead while a test replaced `evaluate`
        or `_step` on this instance (`unittest.mock.patch.object`)."""
        if kind != IN_PLACE_STATE or settled(strategy, rate, cost) is not None:
            return None
        if strategy.scale(rate) >= EXACT_LIMIT:
            return None  # (`decide` raises the error of it, per hit)
        packed = _pack(strategy, rate, cost)
        if packed.data is None:
            return None
        program = _program((packed,))
        name, sha, item, limit = program.name, program.sha, packed.data, rate.limit
        tables, width, read = (
            ((), 4, _decision) if packed.table is None else ((packed.table,), 5, _told)
        )
        prefix, suffix, own = self._prefix, strategy.suffix, self.__dict__
        strategy_decide = strategy.decide
        lanes: Optional[Lanes[str, Decision]] = (
            Lanes(self.circuits) if packed.script in _COALESCED else None
        )

        def now() -> bytes:
            return _SERVER_CLOCK if self._server_clock else _NOW.pack(self.now_ms())

        async def together(keys: list[str]) -> list[Decision]:
            """The hits on one key (`keys`: it, once per hit) in one `EVALSHA`, in turn."""
            args = b"".join((b"s", now(), item * len(keys)))  # (one table serves them all)
            fields = _fields(await self._run(name, evalsha, sha, keys, (args, *tables)))
            return [read(fields, i, limit) for i in range(0, len(fields), width)]

        async def decide(key: str) -> Decision:
            if "evaluate" in own or "_step" in own:
                return await strategy_decide(key, rate, self, cost)
            stored = prefix + key + suffix
            if lanes is None:
                args = (b"c" + now() + item, *tables)
                reply = await self._run(name, evalsha, sha, (stored,), args)
            else:
                queued = lanes.join(stored, stored, together)
                if queued is not None:  # a hit on this key is in flight: the next round
                    return await queued
                try:
                    args = (b"c" + now() + item, *tables)
                    reply = await self._run(name, evalsha, sha, (stored,), args)
                except BaseException as exc:
                    lanes.close(stored, exc)
                    raise
                lanes.close(stored)
            return read(_fields(reply), 0, limit)

        return decide

    async def _step(self, mode: bytes, keys: Sequence[str], packs: Sequence[_Packed]) -> Any:
        """One `EVALSHA` of the program for `packs` in `mode` (see `lua/decide.lua`)."""
        now = _SERVER_CLOCK if self._server_clock else _NOW.pack(self.now_ms())
        program = _program(packs)
        args = _arguments(mode, now, packs)
        return await self._run(program.name, evalsha, program.sha, keys, args)

    async def evaluate(
        self, key: str, strategy: StateStrategy, rate: Rate, cost: int, *, commit: bool = True
    ) -> Decision:
        """One `EVALSHA`; a strategy with no Lua takes the generic locked path."""
        packed = _pack(strategy, rate, cost)
        if packed.data is None:
            return await super().evaluate(key, strategy, rate, cost, commit=commit)
        reply = await self._step(b"c" if commit else b"p", (self._key(key),), (packed,))
        return _decisions(reply, (packed,))[0]

    async def evaluate_all(self, items: Sequence[Item], *, commit: bool = True) -> Decision:
        """Every item decided, then charged all or nothing (`traffik.strategies.steps`), in
        one `EVALSHA` (or group by group, see `_in_order`)."""
        if not self.initialized:  # (whether the store is a cluster may be known only then)
            await self._ready("decide")
        groups = _groups(items, [self._key(item.key) for item in items], self.cluster)
        costs = [item.cost for item in items]
        if len(groups) == 1:
            return combine(await self._decide(groups[0], b"c" if commit else b"p"), costs)
        return combine(await self._in_order(groups, commit), costs)

    async def refund_all(self, items: Sequence[Item]) -> None:
        """Every item's cost given back (never past a full budget) in one `EVALSHA` (one per
        group when one step cannot do it, see `_in_order`)."""
        if not self.initialized:
            await self._ready("refund")
        for group in _groups(items, [self._key(item.key) for item in items], self.cluster):
            await self._refund(group)

    async def _decide(self, group: _Group, mode: bytes) -> Sequence[Decision]:
        """A group's decisions: one `EVALSHA`, or the locked path for items with no Lua (no
        counters among them, so a refused group charges nothing there either)."""
        packs = group.packs
        if packs[0].data is not None:
            return _decisions(await self._step(mode, group.keys, packs), packs)
        decision = await super().evaluate_all(group.items, commit=mode in (b"c", b"g"))
        return decision.parts if isinstance(decision, Combined) else (decision,)

    async def _refund(self, group: _Group) -> None:
        if group.packs[0].data is not None:
            await self._step(b"r", group.keys, group.packs)
        else:
            await super().refund_all(group.items)

    async def _in_order(self, groups: list[_Group], commit: bool) -> list[Decision]:
        """The items decided one group (`_groups`) at a time, each all or nothing (mode 'g':
        a refusing counter counts nothing, even a group's one item). Once a group refuses,
        what the groups before it took is given back, and the groups after it are only read
        (mode 'v': but for what their refusing items convert from another rate's state, as
        in one step): a refused step of several items takes nothing, as in one step. A group that fails
        (its node lost, a timeout) fails the step, after what the groups before it took is
        given back (as far as the store answers): a failed step takes nothing either. Once
        begun, a step that charges runs to its end even if its caller is cancelled meanwhile
        (`finished`): a cancelled hit is charged on every group or on none."""
        if not commit:
            return await self._group_by_group(groups, commit)
        return await finished(self._group_by_group(groups, commit), "redis evaluate_all")

    async def _group_by_group(self, groups: list[_Group], commit: bool) -> list[Decision]:
        """`_in_order`'s loop: the groups decided in turn."""
        parts: dict[int, Decision] = {}
        taken: list[_Group] = []
        refused = False
        for group in groups:
            try:
                mode = b"p" if not commit else b"v" if refused else b"g"
                decisions = await self._decide(group, mode)
            except BaseException:
                for earlier in taken:
                    with contextlib.suppress(Exception):  # (the step's own error tells)
                        await self._refund(earlier)
                raise
            parts.update(zip(group.places, decisions))
            if not commit or refused:
                continue
            if all(decision.allowed for decision in decisions):
                taken.append(group)
                continue
            refused = True
            for earlier in taken:
                await self._refund(earlier)
        return [parts[place] for place in range(len(parts))]
