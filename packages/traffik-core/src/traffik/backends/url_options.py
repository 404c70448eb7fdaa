"""A backend's own settings in its URL's query: `sqlite:///app.db?timeout=2&max_keys=100000`.

An app configured by one environment variable (`TRAFFIK_BACKEND_URL`) can then set more than
the address. Each backend class names the settings its URL may carry (`ThrottleBackend.
url_options`: a name and how its text becomes a value); `from_url` takes them out of the
query and passes them as keywords. A name the class does not list, a value that does not
convert, or a setting given both in the URL and as a keyword is a `ConfigurationError`
naming it. Only plain values travel in a URL (text, numbers, flags): callables and objects
stay keywords.

A URL may carry secrets (a password in its user part, `?password=`): wherever one is shown
(an error, a log line, a backend's `repr`, `python -m traffik`), it goes through
`redact_url`, and a client library's message about it through `redact_text`.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Callable, Optional
from urllib.parse import parse_qsl, unquote

from traffik.exceptions import ConfigurationError
from traffik.on_error import ON_ERROR_POLICIES

__all__ = [
    "COMMON_URL_OPTIONS",
    "Converter",
    "choice",
    "flag",
    "number",
    "redact_text",
    "redact_url",
    "split_url_options",
    "text",
    "whole",
]

Converter = Callable[[str], Any]
"""Turns an option's text into its value, or raises `ValueError` saying what is valid."""

_SECRET_WORDS = ("pass", "secret", "token", "auth", "credential")
"""A query item whose name holds one of these (`password`, `sentinel_password`,
`auth_token`) carries a secret."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def redact_url(url: str) -> str:
    """`url` as it may be shown (a log line, an error, a repr, the command line's output): the
    password of its user part and the value of every query item named like a secret
    (`password`, `sentinel_password`, `auth_token`, ...) replaced by `***`.

    `redis://user:pw@cache:6379/0?password=pw` is shown as
    `redis://user:***@cache:6379/0?password=***`; a user name alone is kept, and a URL with
    no scheme (`user:pw@cache:6379`) is read the same way. The user part ends at the last `@`
    before the query, so a password holding `/`, `:` or `@` is hidden whole.
    """
    base, mark, query = url.partition("?")
    password = _password_at(base)
    if password is not None:
        base = f"{base[: password[0]]}***{base[password[1] :]}"
    if mark:
        items = []
        for item in query.split("&"):
            name, equals, _ = item.partition("=")
            if equals and _secret(unquote(name)):
                item = f"{name}=***"
            items.append(item)
        query = "&".join(items)
    return base + mark + query


def redact_text(text: str, url: str) -> str:
    """`text` (a client library's error about `url`) with every secret `url` holds, and each
    piece of one between `/`, `:`, `@`, `?` or `#` (3 characters or more: a library that
    misreads an unencoded `/` shows a piece alone), replaced by `***`."""
    secrets: list[str] = []
    base, _, query = url.partition("?")
    password = _password_at(base)
    if password is not None:
        secrets.append(base[password[0] : password[1]])
    for item in query.split("&"):
        name, equals, value = item.partition("=")
        if equals and _secret(unquote(name)):
            secrets.append(value)
    pieces = {
        piece
        for secret in secrets
        for piece in [secret, unquote(secret), *re.split(r"[/:@?#]", secret)]
        if len(piece) >= 3
    }
    for piece in sorted(pieces, key=len, reverse=True):
        text = text.replace(piece, "***")
    return text


def _password_at(base: str) -> Optional[tuple[int, int]]:
    """Where the password of `base`'s user part (`scheme://user:password@host`, the scheme
    optional) begins and ends: it ends at the last `@`; None when there is none."""
    start = base.find("://")
    start = 0 if start < 0 else start + 3
    at = base.rfind("@")
    colon = base.find(":", start, at) if at >= start else -1
    return None if colon < 0 else (colon + 1, at)


def _secret(name: str) -> bool:
    """Whether an option named `name` carries a secret (its value is never shown)."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


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
            a keyword with another value, or its value does not convert.
    """
    base, mark, query = url.partition("?")
    if not mark:
        return url, dict(given)
    shown = redact_url(url)
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
                f"{owner}: URL {shown!r} sets {name!r}, which its URL cannot carry; {hint}it "
                f"takes {valid} (other settings as keywords: from_url(url, name=value))"
            )
        if name in seen:
            raise ConfigurationError(f"{owner}: URL {shown!r} sets {name!r} twice")
        seen.add(name)
        try:
            converted = accepted[name](value)
        except ValueError as exc:
            raise ConfigurationError(
                f"{owner}: URL {shown!r} sets {name}={'***' if _secret(name) else repr(value)}; "
                f"it must be {exc}"
            ) from None
        if name in given and given[name] != converted:  # (the same value twice agrees)
            raise ConfigurationError(
                f"{owner}: {name!r} is set both in the URL {shown!r} and as a keyword "
                f"({name}={'***' if _secret(name) else repr(given[name])}), to different "
                "values; set it once"
            )
        options[name] = converted
    return (base + "?" + "&".join(kept) if kept else base), options
