"""A throttle's headers on a response: `HeaderPlan` (encoded ahead of time) and `get_headers`/`set_headers`.

A throttle writes its headers on every response it can reach: allowed ones (a FastAPI
dependency, the decorators, the middleware) and its 429s. The preset rate-limit fields
(`RateLimitField`, written always) and plain strings are encoded once per rate and filled in
from the decision, so the default `"ietf"` headers cost two appends; any other `Header` is
resolved per response from a `StrategyStat` of the decision. A decision of the `on_error`
policy knows nothing of the quota: it gets the plain strings only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

from traffik.decision import LONGEST_WAIT_MS, whole_seconds
from traffik.header_merge import LIST_FIELDS, merge_headers
from traffik.header_value import Header
from traffik.headers import Headers, HeaderValue, resolve_headers
from traffik.rate_limit_fields import RateLimitField, policy_value, quoted_name
from traffik.rates import Rate
from traffik.typing import StrategyStat

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.decision import Decision

__all__ = ["HeaderPlan", "ThrottleHeaders"]


class HeaderPlan:
    """One throttle's `Headers` for its rates, ready to write (module docstring).

    With several rates, `RateLimit-Policy` lists every policy and `RateLimit` each one's
    remaining units and time (draft-ietf-httpapi-ratelimit-headers allows a list), each named
    `"uid:rate"`; the single-valued fields (`X-RateLimit-*`) speak of the binding rate (the
    one that refused, else the one with the fewest units left).
    """

    __slots__ = (
        "_by_limits",
        "_constant",
        "_fields",
        "_formatted",
        "_limit",
        "_limits",
        "_names",
        "_pair",
        "_policy_names",
        "_single",
        "_static",
        "dynamic",
        "rate",
        "rates",
    )

    def __init__(self, name: str, rates: tuple[Rate, ...], headers: Headers) -> None:
        rate = rates[0]
        self.rate, self.rates = rate, rates
        multi = len(rates) > 1
        names = [f"{name}:{r}" for r in rates] if multi else [name]
        self._names = [quoted_name(n).encode() for n in names] if multi else None
        constant: list[tuple[bytes, bytes]] = []  # plain strings: on every response
        static: list[tuple[bytes, bytes]] = []  # and the fields the rate fixes
        fields: list[tuple[bytes, str]] = []  # (which: for a decision under another limit)
        formatted: list[tuple[bytes, bytes, Optional[int]]] = []  # fmt % (remaining, reset)[i]
        dynamic: list[tuple[str, HeaderValue]] = []
        for header, value in headers.raw_items():
            raw_name = header.lower().encode("latin-1")
            if isinstance(value, str):
                if value != Header.DISABLE:
                    constant.append((raw_name, value.encode("latin-1")))
                continue
            field = value.value
            if not isinstance(field, RateLimitField) or value.condition != "always":
                dynamic.append((header, value))
            elif rate.unlimited:
                continue
            elif field.kind == "policy":
                policies = ", ".join(policy_value(n, r) for n, r in zip(names, rates))
                static.append((raw_name, policies.encode()))
                fields.append((raw_name, "policy"))
            elif field.kind == "limit" and not multi:
                static.append((raw_name, str(rate.limit).encode()))
                fields.append((raw_name, "limit"))
            elif field.kind == "limit":
                formatted.append((raw_name, b"%d", 2))
            elif field.kind == "ratelimit":
                formatted.append((raw_name, quoted_name(name).encode() + b";r=%d;t=%d", None))
            else:
                formatted.append((raw_name, b"%d", 0 if field.kind == "remaining" else 1))
        self._constant = constant
        self._static = constant + static
        self._fields = fields
        self._policy_names = names
        single = {name: kind for name, kind in fields if kind == "limit"}
        single.update(_formatted_kinds(formatted))
        self._single = single or None
        """The single-valued fields (`X-RateLimit-*`) by raw name: another throttle on the
        same response may have written them (`_merge_raw`)."""
        # (None for a plan with single-valued fields: `admitted` then always merges)
        self._limit = rate.limit if self._single is None else None
        self._limits = tuple(r.limit for r in rates)
        self._by_limits: dict[tuple[int, ...], list[tuple[bytes, bytes]]] = {}
        self._formatted = formatted
        one = formatted[0] if len(formatted) == 1 else None
        self._pair = (one[0], one[1]) if one is not None and one[2] is None else None
        self.dynamic = tuple(dynamic)
        """The headers resolved per response (`write_dynamic`, `text`)."""

    def raw(self, decision: Decision, wait_ms: Optional[float] = None) -> list[tuple[bytes, bytes]]:
        """ASGI header pairs of the plain strings and rate-limit fields for `decision`;
        `wait_ms` is the wait the client is told when throttled (default: the decision's).
        `t`/`Reset` is the time until the limit is whole again, or the wait when throttled.
        With several rates, the single-valued fields (`X-RateLimit-*`) all speak of the
        binding rate: its limit, its units left and its reset (or the wait, when it refused)."""
        remaining = decision.remaining
        if remaining is None:
            return self._constant.copy()
        headers = self._static_for(decision).copy()
        if not self._formatted:
            return headers
        names = self._names
        if names is None:
            numbers = (*_numbers(decision, wait_ms), int(decision.limit))
        else:
            binding, part = self._binding_part(decision)
            refused = getattr(decision, "refused", None)
            told = wait_ms if part is decision or binding == refused else None
            numbers = (*_numbers(part, told), int(part.limit))
        for name, fmt, index in self._formatted:
            if index is not None:
                headers.append((name, fmt % numbers[index]))
            elif names is None:
                headers.append((name, fmt % numbers[:2]))
            else:
                headers.append((name, self._each(names, decision, wait_ms)))
        return headers

    def admitted(self, decision: Decision, headers: list[tuple[bytes, bytes]]) -> None:
        """Append `raw(decision)` for an admitted decision to `headers` (a response's raw
        headers): the hot path's, the common case (whole units left under the rate's own
        limit) formatted without the general checks, the default `RateLimit` field alone at
        once, for one rate or several (`_each_admitted`)."""
        remaining: Any = decision.remaining  # (an int from every built-in strategy)
        if self._names is not None:
            if not self._each_admitted(decision, headers):
                self._merge_raw(decision, headers)
            return
        if (
            type(remaining) is not int
            or remaining < 0
            or decision.limit != self._limit  # (a tier's, the hour's: its own policy)
        ):
            self._merge_raw(decision, headers)
            return
        headers += self._static
        reset = decision.reset_ms
        # (`%d` writes a whole float as an int; `whole_seconds` bounds any other reset)
        seconds = -(-reset // 1000) if 0 < reset < LONGEST_WAIT_MS else whole_seconds(reset)
        pair = self._pair
        if pair is not None:
            headers.append((pair[0], pair[1] % (remaining, seconds)))
            return
        numbers = (remaining, seconds)
        for name, fmt, index in self._formatted:
            headers.append((name, fmt % (numbers if index is None else numbers[index])))

    def _merge_raw(self, decision: Decision, headers: list[tuple[bytes, bytes]]) -> None:
        """`raw(decision)` appended to `headers`, or merged there when it has single-valued
        fields another throttle may have written (`traffik.header_merge`)."""
        if self._single is None:
            headers += self.raw(decision)
        else:
            merge_headers(headers, self.raw(decision))

    def _each_admitted(self, decision: Decision, headers: list[tuple[bytes, bytes]]) -> bool:
        """`admitted` for several rates in the common case (the `"ietf"` fields alone, each
        rate with whole units left under its own limit): `RateLimit-Policy` as encoded,
        and `RateLimit` with each rate's units and seconds, as `raw` writes them. False,
        writing nothing, for any other case."""
        parts = getattr(decision, "parts", None)
        pair = self._pair
        names = self._names
        if pair is None or self._single is not None or parts is None or names is None:
            return False
        if len(parts) != len(names):
            return False
        each = []
        for quoted, limit, part in zip(names, self._limits, parts):
            left = part.remaining
            if type(left) is not int or left < 0 or part.limit != limit or not part.allowed:
                return False
            reset = part.reset_ms
            seconds = -(-reset // 1000) if 0 < reset < LONGEST_WAIT_MS else whole_seconds(reset)
            each.append(b"%s;r=%d;t=%d" % (quoted, left, seconds))
        headers += self._static
        headers.append((pair[0], b", ".join(each)))
        return True

    def _static_for(self, decision: Decision) -> list[tuple[bytes, bytes]]:
        """The plain strings and the fields the rates fix (`RateLimit-Policy`'s quotas, a
        single rate's limit), for the limits `decision` was made under: a `TieredRate` tier's
        or a `TimeOfDay` hour's limit is the client's policy then, not the base rate's."""
        if not self._fields:
            return self._static
        parts = getattr(decision, "parts", None)
        if parts is not None and len(parts) == len(self.rates):
            limits = tuple(int(part.limit) for part in parts)
        elif len(self.rates) == 1:
            limits = (int(decision.limit),)
        else:
            return self._static
        if limits == self._limits:
            return self._static
        found = self._by_limits.get(limits)
        if found is None:
            rates = [
                rate if rate.limit == limit else Rate(limit=limit, milliseconds=rate.expire)
                for rate, limit in zip(self.rates, limits)
            ]
            values = {
                "policy": ", ".join(
                    policy_value(n, r) for n, r in zip(self._policy_names, rates)
                ).encode(),
                "limit": str(limits[0]).encode(),
            }
            found = self._constant + [(name, values[kind]) for name, kind in self._fields]
            if (
                len(self._by_limits) < 64
            ):  # (a few tiers or hours; a strategy of your own may vary more)
                self._by_limits[limits] = found
        return found

    @staticmethod
    def _each(names: list[bytes], decision: Decision, wait_ms: Optional[float]) -> bytes:
        """`RateLimit` for several rates: each policy's remaining units and time."""
        parts = getattr(decision, "parts", None) or (decision,) * len(names)
        refused = getattr(decision, "refused", None)
        return b", ".join(
            b"%s;r=%d;t=%d" % (quoted, *_numbers(part, wait_ms if index == refused else None))
            for index, (quoted, part) in enumerate(zip(names, parts))
        )

    def stat(
        self, decision: Decision, key: Optional[str], wait_ms: Optional[float] = None
    ) -> Optional[StrategyStat]:
        """The `StrategyStat` a decision amounts to, for resolvers (None: quota unknown): with
        several rates, the binding rate's (`raw`)."""
        if decision.remaining is None:
            return None
        index, part = self._binding_part(decision)
        if part is not decision and index != getattr(decision, "refused", None):
            wait_ms = None  # (the wait told is the refusing rate's)
        if not part.allowed:
            wait = part.wait_ms if wait_ms is None else wait_ms
        elif part.remaining is not None and part.remaining < 1:
            # (the last unit was spent: the next hit waits, at most until the limit is
            # whole again; not 0, which would tell the client to come back at once)
            wait = max(part.reset_ms, 0)
        else:
            wait = 0
        return StrategyStat(
            key=key,
            rate=self.rates[index],
            hits_remaining=part.remaining if part.remaining is not None else decision.remaining,
            wait_ms=wait,
            metadata={"reset_ms": part.reset_ms},
        )

    def _binding_part(self, decision: Decision) -> tuple[int, Decision]:
        """The binding rate's index and its own decision: the rate that refused (the one whose
        wait is the answer's), else the one with the fewest units left (the first of equals)."""
        parts = getattr(decision, "parts", None)
        if parts is None or len(parts) != len(self.rates):
            return 0, decision
        refused = getattr(decision, "refused", None)
        if refused is None:
            refused = min(range(len(parts)), key=lambda i: _units_left(parts[i]))
        return refused, parts[refused]

    def text(
        self,
        decision: Decision,
        wait_ms: Optional[float],
        connection: Any,
        key: Optional[str],
        context: Any,
    ) -> dict[str, str]:
        """Every header of the plan for `decision`, as a mapping (for a 429's `headers=`)."""
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in self.raw(decision, wait_ms)
        }
        if self.dynamic:
            stat = self.stat(decision, key, wait_ms)
            headers.update(resolve_headers(self.dynamic, connection, stat, context))
        return headers

    def write_dynamic(
        self, response: Any, decision: Decision, connection: Any, key: Optional[str], context: Any
    ) -> None:
        """Write the `dynamic` headers for an allowed `decision` on `response` (`raw` gives
        the others)."""
        resolved = resolve_headers(self.dynamic, connection, self.stat(decision, key), context)
        for name, value in resolved.items():
            response.headers[name] = value


def _formatted_kinds(
    formatted: list[tuple[bytes, bytes, Optional[int]]],
) -> list[tuple[bytes, str]]:
    """The formatted single-valued fields (`Remaining`, `Reset`, a `Limit` of several rates)
    with their kinds, by the number each formats (0 remaining, 1 reset, 2 limit)."""
    kinds = {0: "remaining", 1: "reset", 2: "limit"}
    return [(name, kinds[index]) for name, _, index in formatted if index is not None]


def _units_left(decision: Decision) -> float:
    remaining = decision.remaining
    return remaining if remaining is not None else math.inf


def _numbers(decision: Decision, wait_ms: Optional[float]) -> tuple[int, int]:
    """`(remaining, t)`: units left, and the seconds until whole again or, when refused, the
    wait the client is told (`wait_ms`, else the decision's), bounded by `whole_seconds`."""
    remaining = decision.remaining
    remaining = max(int(remaining), 0) if remaining is not None and math.isfinite(remaining) else 0
    if decision.allowed:
        return remaining, whole_seconds(decision.reset_ms)
    return remaining, whole_seconds(decision.wait_ms if wait_ms is None else wait_ms, 1)


class ThrottleHeaders:
    """`get_headers` and `set_headers`, for `Throttle`: its headers computed on demand."""

    uid: str
    headers: Optional[Headers]
    context: dict[str, Any]

    if TYPE_CHECKING:

        async def stat(
            self,
            connection: Any,
            context: Optional[Mapping[str, Any]] = None,
            *,
            path: Optional[str] = None,
            method: Optional[str] = None,
            backend: Optional[ThrottleBackend] = None,
        ) -> Optional[StrategyStat]: ...

    async def get_headers(
        self,
        connection: Any,
        headers: Optional[Mapping[str, Any]] = None,
        stat: Optional[StrategyStat] = None,
        context: Optional[Mapping[str, Any]] = None,
    ) -> dict[str, str]:
        """This throttle's headers for `connection` now, as a dict (nothing is counted).

        `headers` overrides entries (`Header.DISABLE` removes one); `stat` is the client's
        state, read with `await self.stat(connection, context)` when not given and needed.
        Resolvers receive the throttle's context merged with `context`.
        """
        merged = self.headers if headers is None else (self.headers or Headers()) | headers
        if not merged:
            return {}
        ctx = self.context if context is None else {**self.context, **context}
        if not merged.is_static and stat is None:
            stat = await self.stat(connection, context)
        return resolve_headers(merged.raw_items(), connection, stat, ctx)

    async def set_headers(
        self,
        response: Any,
        connection: Any,
        *,
        headers: Optional[Mapping[str, Any]] = None,
        stat: Optional[StrategyStat] = None,
        context: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """Write `get_headers(...)` on `response`, replacing headers of the same names but
        the list fields (`RateLimit`, `RateLimit-Policy`), to which this throttle's policies
        are added: two throttles writing on one response both show."""
        resolved = await self.get_headers(connection, headers, stat, context)
        if not resolved:
            return
        raw = getattr(response, "raw_headers", None)
        if not isinstance(raw, list):
            response.headers.update(resolved)
            return
        ours = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in resolved.items()
        ]
        replaced = {name for name, _ in ours if name not in LIST_FIELDS}
        raw[:] = [(name, value) for name, value in raw if name.lower() not in replaced]
        merge_headers(raw, ours)
