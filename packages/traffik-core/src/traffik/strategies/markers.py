"""Per-request input read from a key marker (`tier:premium:`), then taken out of the storage key.

traffik 1.2's `TieredRate` and `PriorityQueue` read a tier or a priority from a `<marker><value>:`
segment of the key, which the identifier writes (`"tier:premium:user:42"`), and kept it in the
storage key: each priority got its own log, so priorities never met. Here the strategy reads
the segment and removes it before anything is stored, so one client keeps one state whatever
its tier or priority. A throttle escapes its client part (`:` is `%3A` in `tier%3Apremium%3A`);
both spellings are found. In a throttle's key the search starts at the client part (the first
`{`), so a uid that happens to spell a marker is left alone; a `scope` in the throttle's
context (`context={"scope": "priority:4"}`) ends the key and is found there too. Inside the
client part only its start counts (what the identifier writes first): an identifier often
carries text the client sent (`"key:" + api_key`), and a client must not pick its own tier by
sending `tier:enterprise:` in it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

from traffik.keyparts import escape, unescape
from traffik.strategies.base import StateStrategy

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.decision import Decision
    from traffik.rates import Rate
    from traffik.typing import StrategyStat

__all__ = ["KeyMarker", "MarkedStrategy", "deciding"]

_SEPARATOR = "(?::|%3A)"


class KeyMarker:
    """Finds `<name>:<value>` in a key (`name` from a marker such as `"tier:"`)."""

    __slots__ = ("_pattern", "marker")

    def __init__(self, marker: str) -> None:
        self.marker = marker
        name = marker[:-1] if marker.endswith(":") else marker
        spellings = "|".join(sorted({re.escape(name), re.escape(escape(name))}))
        self._pattern = re.compile(
            rf"(?:^|(?<=[:{{]))(?:{spellings}){_SEPARATOR}"
            rf"(?P<value>(?:(?!%3A)[^:{{}}])+)(?P<end>{_SEPARATOR})?"
        )

    def take(self, key: str) -> tuple[Optional[str], str]:
        """The marker's value in `key` (None when absent) and `key` without its segment."""
        start = key.find("{")
        match = self._pattern.search(key, start if start > 0 else 0)
        if match is None:
            return None, key
        value = unescape(match.group("value"))
        begin, end = match.span()
        if match.group("end") is None:  # the segment ends the key, or its client part
            if key.endswith("%3A", 0, begin):
                begin -= 3
            elif key.endswith(":", 0, begin):
                begin -= 1
            else:  # the whole client part or key: keep it, or nothing would be left
                return value, key
        return value, key[:begin] + key[end:]


class MarkedStrategy(StateStrategy):
    """A state strategy with per-request input in its key: `bind` reads it.

    `bind(key, rates)` returns the strategy that decides (a copy holding the input, or
    self), the storage key without the marker, and the rates it decides under.
    `traffik.strategies.steps.items` calls it, so several rates and combined throttles
    bind as one hit does.
    """

    key_marker: KeyMarker

    def bind(self, key: str, rates: Sequence[Rate]) -> tuple[StateStrategy, str, tuple[Rate, ...]]:
        raise NotImplementedError

    async def decide(
        self, key: Any, rate: Rate, backend: ThrottleBackend, cost: int = 1
    ) -> Decision:
        bound, stored, (effective,) = self.bind(str(key), (rate,))
        return await StateStrategy.decide(bound, stored, effective, backend, cost)

    async def _bound_stat(self, key: Any, rate: Rate, backend: ThrottleBackend) -> StrategyStat:
        """`get_stat` of the bound strategy, reported under the caller's key and rate."""
        bound, stored, (effective,) = self.bind(str(key), (rate,))
        stat = await StateStrategy.get_stat(bound, stored, effective, backend)
        return dataclasses.replace(stat, key=key, rate=rate)


def deciding(strategy: Any, key: str, rates: Sequence[Rate]) -> tuple[Any, tuple[Rate, ...]]:
    """The strategy and rates that decide `key`: for a strategy with input in its key, what
    `bind` gives (a `TieredRate` copy at the key's tier, with the tier's rates, whose
    `capacity` is that tier's); for any other, `strategy` and `rates` as given."""
    bind = getattr(strategy, "bind", None)
    if bind is None:
        return strategy, tuple(rates)
    bound, _, decided = bind(key, rates)
    return bound, tuple(decided)
