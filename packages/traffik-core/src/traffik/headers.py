"""Response headers a throttle writes: `Header` (a static or computed value, with a condition) and `Headers`.

A throttle's `headers=` is a preset name or a mapping of header names to strings or
`Header`s. The presets are `Headers` too: `"ietf"` (`IETF_HEADERS`: `RateLimit-Policy` and
`RateLimit`, draft-ietf-httpapi-ratelimit-headers-11), `"legacy"` (`LEGACY_HEADERS`:
`X-RateLimit-Limit`, `-Remaining`, `-Reset`) and `"both"`; traffik 1.2's
`DEFAULT_HEADERS_ALWAYS` and `DEFAULT_HEADERS_THROTTLED` are here as well. A computed
value is a sync function `(connection, stat, context) -> str` of the client's
`StrategyStat`; a plain string is written on every response.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, Union, cast

from traffik.decision import LONGEST_WAIT_MS, whole_seconds
from traffik.exceptions import ConfigurationError
from traffik.keyparts import unescape

if TYPE_CHECKING:
    from traffik.rates import Rate
    from traffik.typing import StrategyStat

__all__ = [
    "DEFAULT_HEADERS_ALWAYS",
    "DEFAULT_HEADERS_THROTTLED",
    "IETF_HEADERS",
    "LEGACY_HEADERS",
    "LONGEST_WAIT_MS",
    "Header",
    "Headers",
    "RateLimitField",
    "header_setting",
    "policy_value",
    "quoted_name",
    "resolve_headers",
    "whole_seconds",
]

_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')
_CONDITIONS = ("always", "throttled")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
"""A header name (RFC 9110 `token`)."""
_UNWRITABLE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")
"""What a header value cannot hold: CR, LF, NUL and other controls, and text beyond latin-1."""


def _field_value(text: str) -> str:
    """`text` as a header value: every character a value cannot hold (CR, LF, NUL, other
    controls but HTAB, anything beyond latin-1) replaced by `_`, so a resolver's text, which
    may come from the client (an identifier, a request header), can never end the header
    line, add one of its own, or fail the response.

    Args:
        text: A resolver's text.

    Returns:
        The text, safe to write as a header value.
    """
    return text if _UNWRITABLE.search(text) is None else _UNWRITABLE.sub("_", text)


def _checked_value(name: str, value: str) -> str:
    if _UNWRITABLE.search(value) is not None:
        raise ConfigurationError(
            f"headers[{name!r}]={value!r}: a header value holds tabs and printable latin-1 "
            "text only (no CR, LF or other control characters)"
        )
    return value


Resolver = Callable[[Any, "StrategyStat", Optional[Mapping[str, Any]]], Optional[str]]
Condition = Union[str, Callable[[Any, "StrategyStat", Optional[Mapping[str, Any]]], bool]]


def quoted_name(name: str) -> str:
    """A policy name as an IETF header's quoted string (unsafe characters as `_`).

    Args:
        name: The policy name.

    Returns:
        The name in double quotes, with every character outside printable ASCII, and every
        `"` and `\\`, replaced by `_`.
    """
    return f'"{_UNSAFE.sub("_", name)}"'


def policy_value(name: str, rate: Rate) -> str:
    """`"name";q=100;w=60`. `w` is given only for a period of whole seconds: the draft counts
    windows in seconds, and `5/500ms` as a window of one second would advertise half the rate.

    Args:
        name: The policy name (quoted with `quoted_name`).
        rate: The rate: `q` is its limit, `w` its period in seconds.

    Returns:
        The `RateLimit-Policy` item.
    """
    window = f";w={rate.expire // 1000}" if rate.expire % 1000 == 0 else ""
    return f"{quoted_name(name)};q={rate.limit}{window}"


def _number(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _limit(connection: Any, stat: StrategyStat, context: Any) -> str:
    return str(stat.rate.limit)


def _remaining(connection: Any, stat: StrategyStat, context: Any) -> str:
    return _number(stat.hits_remaining)


def _reset_ms(connection: Any, stat: StrategyStat, context: Any) -> str:
    wait = stat.wait_ms
    if not 0 < wait < LONGEST_WAIT_MS:  # (NaN, negative, infinite or past the longest)
        wait = LONGEST_WAIT_MS if wait >= LONGEST_WAIT_MS else 0
    return _number(wait)


def _reset_seconds(connection: Any, stat: StrategyStat, context: Any) -> str:
    return str(whole_seconds(stat.wait_ms))


def _is_async(function: Any) -> bool:
    """Whether calling `function` gives a coroutine (an async function, a partial of one, an
    object with an async `__call__`)."""
    while isinstance(function, functools.partial):
        function = function.func
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004
    )


class Header:
    """One header value: a string or a resolver `(connection, stat, context) -> str`, written
    when its condition holds. Immutable and hashable.

    `when` is `"always"`, `"throttled"` (the default: the client has no units left, so the
    last allowed response has it too) or a predicate `(connection, stat, context) -> bool`.
    A resolver returning None leaves the header out. `Header.DISABLE` as a value removes a
    header (an override in `get_headers(headers=...)`, say).

    Args:
        value: The header's value: a string, or a resolver
            `(connection, stat, context) -> str or None` (positional only).
        when: When the header is written: `"always"`, `"throttled"` or a predicate
            `(connection, stat, context) -> bool`.

    Raises:
        ConfigurationError: When `value` is neither a string nor callable, or `when` is
            none of these.
    """

    __slots__ = ("_condition", "_value")

    DISABLE: ClassVar[str] = ":___disabled___:"
    _value: Union[str, Resolver]
    _condition: Condition

    def __init__(self, value: Union[str, Resolver], /, when: Condition = "throttled") -> None:
        if not isinstance(value, str) and not callable(value):
            raise ConfigurationError(
                f"Header({value!r}): the value is a string or a function (connection, stat, context) -> str"
            )
        if not callable(when) and when not in _CONDITIONS:
            raise ConfigurationError(
                f"Header(when={when!r}): use 'always', 'throttled' or a function "
                "(connection, stat, context) -> bool"
            )
        if _is_async(value) or _is_async(when):
            raise ConfigurationError(
                f"Header({value!r}, when={when!r}): an async function; a header is written "
                "as the response is built, without awaiting: use a sync function "
                "(connection, stat, context) -> str (the value) or -> bool (`when`)"
            )
        if isinstance(value, str):
            _checked_value("Header", value)
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "_condition", when)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Header is immutable; use header.when(...) for a copy")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Header, (self._value, self._condition))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Header):
            return NotImplemented
        return (self._value, self._condition) == (other._value, other._condition)

    def __hash__(self) -> int:
        return hash((self._value, self._condition))

    def __repr__(self) -> str:
        return f"Header({self._value!r}, when={self._condition!r})"

    @property
    def value(self) -> Union[str, Resolver]:
        """The string or resolver the header is written from."""
        return self._value

    @property
    def condition(self) -> Condition:
        """When the header is written: `"always"`, `"throttled"` or a predicate."""
        return self._condition

    @property
    def is_static(self) -> bool:
        """A string written on every response."""
        return isinstance(self._value, str) and self._condition == "always"

    def when(self, condition: Condition) -> Header:
        """A copy with another condition.

        Args:
            condition: The copy's condition: `"always"`, `"throttled"` or a predicate
                `(connection, stat, context) -> bool`.

        Returns:
            The new `Header`.
        """
        return Header(self._value, condition)

    @property
    def always(self) -> Header:
        """A copy written on every response."""
        return self.when("always")

    @property
    def throttled(self) -> Header:
        """A copy written only when the client has no units left."""
        return self.when("throttled")

    def check(self, connection: Any, stat: StrategyStat, context: Any = None) -> bool:
        """Whether the header's condition holds for this response.

        Args:
            connection: The request or websocket.
            stat: The client's state under the throttle.
            context: The throttle's context, passed to a predicate.

        Returns:
            True for `"always"`; for `"throttled"`, whether `stat.hits_remaining <= 0`;
            else the predicate's answer.
        """
        condition = self._condition
        if condition == "always":
            return True
        if condition == "throttled":
            return bool(stat.hits_remaining <= 0)
        return bool(condition(connection, stat, context))  # type: ignore[operator]

    def resolve(self, connection: Any, stat: StrategyStat, context: Any = None) -> Optional[str]:
        """The header's text for this response.

        Args:
            connection: The request or websocket.
            stat: The client's state under the throttle.
            context: The throttle's context, passed to a resolver.

        Returns:
            The string value, or the resolver's result (None: leave the header out).
        """
        value = self._value
        return value if isinstance(value, str) else value(connection, stat, context)

    @classmethod
    def LIMIT(cls, *, when: Condition) -> Header:
        """The rate's limit.

        Args:
            when: When the header is written: `"always"`, `"throttled"` or a predicate
                `(connection, stat, context) -> bool`.

        Returns:
            The `Header`.
        """
        return cls(_limit, when)

    @classmethod
    def REMAINING(cls, *, when: Condition) -> Header:
        """Units left (`stat.hits_remaining`).

        Args:
            when: When the header is written: `"always"`, `"throttled"` or a predicate
                `(connection, stat, context) -> bool`.

        Returns:
            The `Header`.
        """
        return cls(_remaining, when)

    @classmethod
    def RESET_MILLISECONDS(cls, *, when: Condition) -> Header:
        """The wait in milliseconds (`0` when not throttled).

        Args:
            when: When the header is written: `"always"`, `"throttled"` or a predicate
                `(connection, stat, context) -> bool`.

        Returns:
            The `Header`.
        """
        return cls(_reset_ms, when)

    @classmethod
    def RESET_SECONDS(cls, *, when: Condition) -> Header:
        """The wait in whole seconds, rounded up (`0` when not throttled).

        Args:
            when: When the header is written: `"always"`, `"throttled"` or a predicate
                `(connection, stat, context) -> bool`.

        Returns:
            The `Header`.
        """
        return cls(_reset_seconds, when)


class RateLimitField:
    """A value of the IETF and legacy presets: `policy`, `ratelimit`, `limit`, `remaining` or
    `reset`, computed from a `StrategyStat` (the policy is named after the throttle, the
    first part of the stat's key). Throttles encode these ahead of time (`HeaderPlan`).

    Called as `field(connection, stat, context)`, it returns the value, or None for an
    unlimited rate. `reset` is in whole seconds, rounded up.

    Args:
        kind: Which value: `"policy"`, `"ratelimit"`, `"limit"`, `"remaining"` or
            `"reset"`.

    Raises:
        ConfigurationError: When `kind` is none of these.
    """

    __slots__ = ("kind",)
    KINDS = ("policy", "ratelimit", "limit", "remaining", "reset")

    def __init__(self, kind: str) -> None:
        if kind not in self.KINDS:
            raise ConfigurationError(f"RateLimitField({kind!r}): use one of {self.KINDS}")
        self.kind = kind

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RateLimitField) and other.kind == self.kind

    def __hash__(self) -> int:
        return hash((RateLimitField, self.kind))

    def __repr__(self) -> str:
        return f"RateLimitField({self.kind!r})"

    def __call__(self, connection: Any, stat: StrategyStat, context: Any = None) -> Optional[str]:
        rate = stat.rate
        if rate.unlimited or not math.isfinite(stat.hits_remaining):
            return None
        name = unescape(str(stat.key).split(":", 1)[0])
        if self.kind == "policy":
            return policy_value(name, rate)
        if self.kind == "limit":
            return str(rate.limit)
        remaining = max(int(stat.hits_remaining), 0)
        if stat.wait_ms > 0:
            reset = whole_seconds(stat.wait_ms, 1)
        else:
            reset = whole_seconds((stat.metadata or {}).get("reset_ms", 0))
        if self.kind == "ratelimit":
            return f"{quoted_name(name)};r={remaining};t={reset}"
        return str(remaining if self.kind == "remaining" else reset)


HeaderValue = Union[str, Header]


class Headers(MutableMapping[str, Header]):
    """Header names to values (strings or `Header`s); `|` merges, the right side winning.

    Reading an entry gives a `Header` (a string as `Header(s, when="always")`); strings and
    static headers are kept as strings, so a collection of strings only (`is_static`) is
    written without reading the client's state. Picklable when its resolvers are.

    Args:
        raw: The entries (positional only): a mapping or an iterable of `(name, value)`
            pairs, each value a string or a `Header`; None for none.

    Raises:
        ConfigurationError: When a name is not a non-empty string or a value is neither a
            string nor a `Header`.
    """

    __slots__ = ("_items",)

    def __init__(
        self, raw: Union[Mapping[str, HeaderValue], Iterable[Any], None] = None, /
    ) -> None:
        self._items: dict[str, HeaderValue] = {}
        if raw is not None:
            self.update(cast(Any, raw))

    @staticmethod
    def _entry(name: Any, value: Any) -> HeaderValue:
        if not isinstance(name, str) or _TOKEN.match(name) is None:
            raise ConfigurationError(
                f"headers: {name!r} is not a header name; use letters, digits and "
                "!#$%&'*+-.^_`|~ only, like 'X-RateLimit-Limit'"
            )
        if isinstance(value, Header):
            return value.value if value.is_static else value  # type: ignore[return-value]
        if isinstance(value, str):
            return _checked_value(name, value)
        raise ConfigurationError(f"headers[{name!r}]={value!r}: use a string or a Header")

    def __getitem__(self, name: str) -> Header:
        value = self._items[name]
        return Header(value, "always") if isinstance(value, str) else value

    def __setitem__(self, name: str, value: HeaderValue) -> None:
        self._items[name] = self._entry(name, value)

    def __delitem__(self, name: str) -> None:
        del self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Headers, (dict(self._items),))

    def raw_items(self) -> list[tuple[str, HeaderValue]]:
        """The entries as stored: strings, and `Header`s that are not static.

        Returns:
            The `(name, value)` pairs, in order.
        """
        return list(self._items.items())

    @property
    def is_static(self) -> bool:
        """Whether every value is a plain string (written without reading the client's state)."""
        return all(isinstance(value, str) for value in self._items.values())

    def copy(self) -> Headers:
        """A shallow copy.

        Returns:
            A new `Headers` with the same entries.
        """
        return Headers(self._items)

    def __or__(self, other: Any) -> Headers:
        if not isinstance(other, (Mapping, Headers)):
            return NotImplemented
        merged = self.copy()
        merged.update(other)
        return merged

    def __ror__(self, other: Any) -> Headers:
        if not isinstance(other, Mapping):
            return NotImplemented
        return Headers(other) | self

    def __ior__(self, other: Any) -> Headers:
        self.update(other)
        return self


def resolve_headers(
    items: Iterable[tuple[str, HeaderValue]],
    connection: Any,
    stat: Optional[StrategyStat],
    context: Any = None,
) -> dict[str, str]:
    """The headers `items` give for `stat` (None: unknown, so only plain strings); a
    `Header.DISABLE` value, a failed condition or a None from a resolver leaves one out. A
    resolver's text has every character a header value cannot hold replaced by `_`.

    Args:
        items: The `(name, value)` pairs, as `Headers.raw_items` gives them.
        connection: The request or websocket.
        stat: The client's state under the throttle, or None when unknown.
        context: The throttle's context, passed to conditions and resolvers.

    Returns:
        The header names and their text.
    """
    headers: dict[str, str] = {}
    for name, value in items:
        if isinstance(value, str):
            if value != Header.DISABLE:
                headers[name] = value
        elif stat is not None and value.check(connection, stat, context):
            text = value.resolve(connection, stat, context)
            if text is not None and text != Header.DISABLE:
                headers[name] = _field_value(text)
    return headers


IETF_HEADERS = Headers(
    {
        "RateLimit-Policy": Header(RateLimitField("policy"), when="always"),
        "RateLimit": Header(RateLimitField("ratelimit"), when="always"),
    }
)
"""`headers="ietf"` (the default)."""

LEGACY_HEADERS = Headers(
    {
        "X-RateLimit-Limit": Header(RateLimitField("limit"), when="always"),
        "X-RateLimit-Remaining": Header(RateLimitField("remaining"), when="always"),
        "X-RateLimit-Reset": Header(RateLimitField("reset"), when="always"),
    }
)
"""`headers="legacy"`; the reset is in seconds."""

DEFAULT_HEADERS_ALWAYS = Headers(
    {
        "X-RateLimit-Limit": Header.LIMIT(when="always"),
        "X-RateLimit-Remaining": Header.REMAINING(when="always"),
        "Retry-After": Header.RESET_SECONDS(when="always"),
    }
)
"""traffik 1.2's preset: the limit, the units left and the wait in seconds, on every response."""

DEFAULT_HEADERS_THROTTLED = Headers(
    {
        "X-RateLimit-Limit": Header.LIMIT(when="throttled"),
        "X-RateLimit-Remaining": Header.REMAINING(when="throttled"),
        "Retry-After": Header.RESET_SECONDS(when="throttled"),
    }
)
"""The same three, only when the client has no units left."""


def header_setting(setting: Any, owner: str) -> Optional[Headers]:
    """A throttle's own `Headers` for its `headers=` setting: `"ietf"` (or True), `"legacy"`,
    `"both"`, a mapping or `Headers` (copied), or None/False/empty for none.

    Args:
        setting: The throttle's `headers=` setting.
        owner: The throttle, named in the error message.

    Returns:
        The throttle's own `Headers`, or None for no headers.

    Raises:
        ConfigurationError: When `setting` is none of these, or a mapping holds an invalid
            name or value.
    """
    if setting is None or setting is False:
        return None
    if setting is True or setting == "ietf":
        return IETF_HEADERS.copy()
    if setting == "legacy":
        return LEGACY_HEADERS.copy()
    if setting == "both":
        return IETF_HEADERS | LEGACY_HEADERS
    if isinstance(setting, Mapping):
        return Headers(setting) or None
    raise ConfigurationError(
        f"{owner}: headers={setting!r} is not valid; use 'ietf', 'legacy', 'both', None, or a "
        "mapping of header names to strings or Header(...)"
    )
