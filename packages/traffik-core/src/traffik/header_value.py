"""`Header`: one response header's value, a string or computed from the client's state, and when it is written.

A computed value is a sync function `(connection, stat, context) -> str` of the client's
`StrategyStat`; a plain string is written on every response. What a value may hold is checked
here too: a string a user gives fails at construction when it could not be written, and a
resolver's text is made writable (`_field_value`).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Optional, Union

from traffik.decision import LONGEST_WAIT_MS, whole_seconds
from traffik.exceptions import ConfigurationError

if TYPE_CHECKING:
    from traffik.typing import StrategyStat

__all__ = ["Header"]

_CONDITIONS = ("always", "throttled")
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


def _checked_value(where: str, value: str) -> str:
    """`value`, refused unless a header can hold it as it is; `where` names it for the
    message (`headers['X-Plan']='...'`, `Header('...')`)."""
    if _UNWRITABLE.search(value) is not None:
        raise ConfigurationError(
            f"{where}: a header value holds tabs and printable latin-1 text only (no CR, LF or "
            "other control characters)"
        )
    return value


Resolver = Callable[[Any, "StrategyStat", Mapping[str, Any]], Union[str, int, float, None]]
"""`(connection, stat, context) -> text`: a str, a number (written as digits) or None (the
header left out); the context is the throttle's, merged with the hit's (a mapping, empty
when there is none). A resolver that raises, or gives anything else, leaves its header out
(logged once per 10 s per header)."""
Condition = Union[
    Literal["always", "throttled"], Callable[[Any, "StrategyStat", Mapping[str, Any]], bool]
]


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
    A resolver returning a number has it written as digits; one returning None leaves the
    header out, and so does one that raises or returns anything else (logged once per 10 s
    per header). `Header.DISABLE` as a value removes a header (an override in
    `get_headers(headers=...)`, say).

    Args:
        value: The header's value: a string, or a resolver
            `(connection, stat, context) -> str, a number or None` (positional only).
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
            _checked_value(f"Header({value!r})", value)
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

    def check(
        self, connection: Any, stat: StrategyStat, context: Optional[Mapping[str, Any]] = None
    ) -> bool:
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
        return bool(condition(connection, stat, {} if context is None else context))

    def resolve(
        self, connection: Any, stat: StrategyStat, context: Optional[Mapping[str, Any]] = None
    ) -> Union[str, int, float, None]:
        """The header's text for this response.

        Args:
            connection: The request or websocket.
            stat: The client's state under the throttle.
            context: The throttle's context, passed to a resolver.

        Returns:
            The string value, or the resolver's result (None: leave the header out; a
            number is written as digits by `traffik.headers.resolve_headers`).
        """
        value = self._value
        if isinstance(value, str):
            return value
        return value(connection, stat, {} if context is None else context)

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
        """The wait in milliseconds: 0 while units are left; on the last allowed response (no
        units left), the time until the limit is whole again.

        Args:
            when: When the header is written: `"always"`, `"throttled"` or a predicate
                `(connection, stat, context) -> bool`.

        Returns:
            The `Header`.
        """
        return cls(_reset_ms, when)

    @classmethod
    def RESET_SECONDS(cls, *, when: Condition) -> Header:
        """The wait in whole seconds, rounded up: 0 while units are left; on the last allowed
        response (no units left), the time until the limit is whole again.

        Args:
            when: When the header is written: `"always"`, `"throttled"` or a predicate
                `(connection, stat, context) -> bool`.

        Returns:
            The `Header`.
        """
        return cls(_reset_seconds, when)
