"""A backend's own settings in its URL's query: `sqlite:///app.db?timeout=2&max_keys=100000`.

An app configured by one environment variable (`TRAFFIK_BACKEND_URL`) can then set more than
the address. Each backend class names the settings its URL may carry (`ThrottleBackend.
url_options`: a name and how its text becomes a value); `from_url` takes them out of the
query and passes them as keywords. A name the class does not list, a value that does not
convert, or a setting given both in the URL and as a keyword is a `ConfigurationError`
naming it. Only plain values travel in a URL (text, numbers, flags): callables and objects
stay keywords.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Callable
from urllib.parse import parse_qsl

from traffik.exceptions import ConfigurationError
from traffik.on_error import ON_ERROR_POLICIES

__all__ = [
    "COMMON_URL_OPTIONS",
    "Converter",
    "choice",
    "flag",
    "number",
    "split_url_options",
    "text",
    "whole",
]

Converter = Callable[[str], Any]
"""Turns an option's text into its value, or raises `ValueError` saying what is valid."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def text(value: str) -> str:
    """The text as it is (the backend checks it)."""
    return value


def whole(value: str) -> int:
    """A whole number, such as `100000` (underscores allowed, as in Python)."""
    try:
        return int(value)
    except ValueError:
        raise ValueError("a whole number, such as 100000") from None


def number(value: str) -> float:
    """A finite number, such as `2` or `0.5` (seconds, for a timeout)."""
    try:
        found = float(value)
    except ValueError:
        found = math.nan
    if not math.isfinite(found):
        raise ValueError("a finite number, such as 2 or 0.5")
    return found


def flag(value: str) -> bool:
    """`true`/`false`, `yes`/`no`, `on`/`off` or `1`/`0` (any case)."""
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("true or false (also yes/no, on/off, 1/0)")


def choice(*allowed: str) -> Converter:
    """One of `allowed`, exactly."""

    def chosen(value: str) -> str:
        if value not in allowed:
            raise ValueError("one of " + ", ".join(repr(a) for a in allowed))
        return value

    chosen.__doc__ = "One of " + ", ".join(allowed) + "."
    return chosen


COMMON_URL_OPTIONS: Mapping[str, Converter] = MappingProxyType(
    {
        "namespace": text,
        "persistent": flag,
        "fail_fast": flag,
        "on_error": choice(*ON_ERROR_POLICIES),
        "shadow": flag,
        "cache_refusals": flag,
    }
)
"""What every backend's URL may carry: `ThrottleBackend`'s own settings and its defaults for
throttles (`on_error` by name: a handler is a keyword)."""


def split_url_options(
    url: str,
    owner: str,
    accepted: Mapping[str, Converter],
    given: Mapping[str, Any],
    *,
    keep_others: bool = False,
) -> tuple[str, dict[str, Any]]:
    """`url` without the query items `accepted` names, and the keyword options: `given` plus
    the items' values.

    Args:
        url: The backend URL, perhaps with a query (`?name=value&...`).
        owner: Who is built, named in errors (`"SQLiteBackend"`).
        accepted: The option names the URL may carry, each with its converter.
        given: The options given as keywords.
        keep_others: Leave the items `accepted` does not name in the URL (for a client
            library that reads its own, as redis-py does); False: such an item is an error.

    Returns:
        The URL (its query holding only the items left to the client library) and the
        options.

    Raises:
        ConfigurationError: When an item is unknown (and not kept), repeated, given also as
            a keyword, or its value does not convert.
    """
    base, mark, query = url.partition("?")
    if not mark:
        return url, dict(given)
    options = dict(given)
    kept: list[str] = []
    seen: set[str] = set()
    for item in query.split("&"):
        if not item:
            continue
        pairs = parse_qsl(item, keep_blank_values=True)
        name, value = pairs[0] if pairs else (item, "")
        if name not in accepted:
            if keep_others:
                kept.append(item)
                continue
            valid = ", ".join(sorted(accepted))
            close = difflib.get_close_matches(name, accepted, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigurationError(
                f"{owner}: URL {url!r} sets {name!r}, which its URL cannot carry; {hint}it "
                f"takes {valid} (other settings as keywords: from_url(url, name=value))"
            )
        if name in seen:
            raise ConfigurationError(f"{owner}: URL {url!r} sets {name!r} twice")
        seen.add(name)
        if name in given:
            raise ConfigurationError(
                f"{owner}: {name!r} is set both in the URL {url!r} and as a keyword "
                f"({name}={given[name]!r}); set it once"
            )
        try:
            options[name] = accepted[name](value)
        except ValueError as exc:
            raise ConfigurationError(
                f"{owner}: URL {url!r} sets {name}={value!r}; it must be {exc}"
            ) from None
    return (base + "?" + "&".join(kept) if kept else base), options
