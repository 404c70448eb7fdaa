"""Key parts: text escaped so that no part of a key can reach into another.

Keys are made of parts joined by `:` (`namespace:uid:client:METHOD:/route`). Each part is
escaped here, so a part never contains a separator, a Redis hash-tag brace, a space, a
control character or a lone surrogate, and distinct texts stay distinct. Identifiers that are
not strings are tagged with their type, so `5` and `"5"` are different clients. An identifier
longer than `LONGEST_TEXT` characters (an API key a client made 10 KB long) is keyed by its
first 64 characters, `%%` and the SHA-256 of the whole: its key stays short on every store,
and `%%` appears in no escaped text, so it never meets a shorter identifier's part.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from traffik.config import ANONYMOUS_IDENTIFIER
from traffik.exceptions import ConfigurationError

__all__ = ["ANONYMOUS_PART", "LONGEST_TEXT", "client_part", "escape", "keyless", "unescape"]

LONGEST_TEXT = 128
"""Identifiers longer than this many characters are keyed by a digest (module docstring)."""
_HEAD = 64

_SPECIAL = re.compile("[%:{}\x00-\x20\x7f\ud800-\udfff]")


def _code(match: re.Match[str]) -> str:
    char = match.group()
    point = ord(char)
    return f"%u{point:04X}" if point > 0xFF else f"%{point:02X}"


_search = _SPECIAL.search
_ESCAPED: dict[str, str] = {}
_ESCAPED_MAX = 4096
"""Escaped texts remembered (IPv6 addresses, templates): at most this many, then forgotten;
texts longer than `LONGEST_TEXT` are never kept (a client picks those)."""


def escape(text: str) -> str:
    """`text` with `%`, `:`, braces, spaces, control characters and lone surrogates
    percent-encoded: safe as one part of a key on every backend (valid UTF-8, no separator,
    no Redis hash tag), and distinct for distinct texts."""
    if _SPECIAL.search(text) is None:
        return text
    escaped = _ESCAPED.get(text)
    if escaped is None:
        escaped = _SPECIAL.sub(_code, text)
        if len(text) <= LONGEST_TEXT:
            if len(_ESCAPED) >= _ESCAPED_MAX:
                _ESCAPED.clear()
            _ESCAPED[text] = escaped
    return escaped


_CODE = re.compile("%u([0-9A-F]{4})|%([0-9A-F]{2})")


def unescape(part: str) -> str:
    """The text `escape` made `part` from."""
    if "%" not in part:
        return part
    return _CODE.sub(lambda match: chr(int(match.group(1) or match.group(2), 16)), part)


ANONYMOUS_PART = escape(ANONYMOUS_IDENTIFIER)
"""The client part of the anonymous client (no peer address, or a `None` identifier)."""


def _digest(head: str, whole: bytes) -> str:
    return f"{head}%%{hashlib.sha256(whole).hexdigest()}"


def _text_part(text: str) -> str:
    """`text` escaped, or, when longer than `LONGEST_TEXT`, its head escaped and a digest."""
    if len(text) <= LONGEST_TEXT:
        return escape(text)
    return _digest(escape(text[:_HEAD]), text.encode("utf-8", "surrogatepass"))


def client_part(ident: Any) -> str:
    """The key part for an identifier: a string as itself (escaped); anything else tagged
    with its type (`%int=5`), which no escaped string can spell; `None` is anonymous. A
    long identifier is keyed by its head and a digest (module docstring). An object whose
    text is its memory address (a type with neither `__str__` nor `__repr__` of its own)
    names no client: a `ConfigurationError`."""
    if type(ident) is str and len(ident) <= LONGEST_TEXT:
        return ident if _search(ident) is None else escape(ident)
    if isinstance(ident, str):
        return _text_part(ident)
    if ident is None:
        return ANONYMOUS_PART
    if isinstance(ident, (bytes, bytearray, memoryview)):
        data = bytes(ident)
        if 2 * len(data) <= LONGEST_TEXT:
            return "%bytes=" + data.hex()
        return "%bytes=" + _digest(data[: _HEAD // 2].hex(), data)
    kind: Any = type(ident)  # (its functions, not methods bound to an instance)
    if kind.__str__ is object.__str__ and kind.__repr__ is object.__repr__:
        raise ConfigurationError(keyless(ident, "an identifier"))
    return f"%{escape(kind.__qualname__)}={_text_part(str(ident))}"


def keyless(ident: Any, source: str) -> str:
    """The message refusing `ident`, an object whose text is its memory address, as the
    value `source` (an identifier, named) returned."""
    kind = type(ident)
    return (
        f"{source} returned a {kind.__module__}.{kind.__qualname__}, an object with no text "
        "of its own: its default text is its memory address, so each object would be a new "
        "client with a budget of its own; return a str or int that names the client, such "
        "as request.user.username rather than request.user"
    )
