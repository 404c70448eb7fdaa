"""Response headers a throttle writes: `Headers` (names to `Header`s or strings), its presets, and `headers=`.

A throttle's `headers=` is a preset name or a mapping of header names to strings or
`Header`s. The presets are `Headers` too: `"ietf"` (`IETF_HEADERS`: `RateLimit-Policy` and
`RateLimit`, draft-ietf-httpapi-ratelimit-headers-11), `"legacy"` (`LEGACY_HEADERS`:
`X-RateLimit-Limit`, `-Remaining`, `-Reset`) and `"both"`; traffik 1.2's
`DEFAULT_HEADERS_ALWAYS` and `DEFAULT_HEADERS_THROTTLED` are here as well. One value is a
`Header` (`traffik.header_value`): a plain string, written on every response, or computed
from the client's `StrategyStat`; the presets compute theirs with `RateLimitField`
(`traffik.rate_limit_fields`).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Optional, Union, cast

from traffik.decision import LONGEST_WAIT_MS, whole_seconds
from traffik.exceptions import ConfigurationError
from traffik.header_value import Condition as Condition
from traffik.header_value import Header, _checked_value, _field_value, _number
from traffik.header_value import Resolver as Resolver
from traffik.logs import QuietLog
from traffik.rate_limit_fields import RateLimitField, policy_value, quoted_name

if TYPE_CHECKING:
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

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
"""A header name (RFC 9110 `token`)."""

HeaderValue = Union[str, Header]

_log = QuietLog(logging.getLogger("traffik"))
"""A header left out (`resolve_headers`): logged once per 10 s per header and error."""


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
            return _checked_value(f"headers[{name!r}]={value!r}", value)
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
        elif stat is not None:
            text = _resolved(name, value, connection, stat, context)
            if text is not None and text != Header.DISABLE:
                headers[name] = _field_value(text)
    return headers


def _resolved(
    name: str, value: Header, connection: Any, stat: StrategyStat, context: Any
) -> Optional[str]:
    """`value`'s text for this response, or None to leave the header out: when its condition
    fails, and when its condition or resolver raises or the resolver gives neither text nor a
    number (logged, once per 10 s per header and error). A header never fails the response:
    the request it tells of was decided and charged already."""
    try:
        if not value.check(connection, stat, context):
            return None
        text: Any = value.resolve(connection, stat, context)
    except Exception as exc:
        _log.log(
            logging.WARNING,
            (name, type(exc)),
            "the header %r was left out: its condition or resolver raised %s: %s",
            name,
            type(exc).__name__,
            exc,
        )
        return None
    if text is None or isinstance(text, str):
        return text
    if isinstance(text, (int, float)) and not isinstance(text, bool) and math.isfinite(text):
        return _number(text)
    _log.log(
        logging.WARNING,
        (name, type(text)),
        "the header %r was left out: its resolver gave %r, where a header's text is a str "
        "(or a number, written as digits; None leaves the header out)",
        name,
        text,
    )
    return None


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
