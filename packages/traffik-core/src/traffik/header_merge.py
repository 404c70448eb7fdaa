"""Throttles' headers put on a response that has headers already: `merge_headers`.

A response can get rate-limit headers from several writers: the throttles of a
`ThrottleMiddleware`, those of the route (a dependency, a decorator), a refusal's own
`Retry-After`, and the endpoint itself (an `HTTPException`'s headers, a copy of
`get_headers`). Each field is then sent once, or as a list where its syntax is one:

- `RateLimit` and `RateLimit-Policy` are lists, an item per policy: a line of the throttles'
  is added unless the response has that very line already.
- Every other field holds one value, and a field the response has keeps its value.
- The legacy fields (`X-RateLimit-*`) go together, all of one writer's: the throttle with the
  fewest units left. When the response has some already, the throttles' replace all of them
  if their `X-RateLimit-Remaining` is lower, and are left out otherwise (with `theirs_win`,
  an `HTTPException`'s own headers, always left out), so the limit of one throttle never
  stands beside the remaining units of another.

Names are compared without case; a replaced value keeps the response's spelling of the name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["LIST_FIELDS", "merge_headers"]

LIST_FIELDS = frozenset((b"ratelimit", b"ratelimit-policy"))
"""The fields whose value is a list of policies (draft-ietf-httpapi-ratelimit-headers)."""

_LEGACY = b"x-ratelimit-"
_REMAINING = b"x-ratelimit-remaining"


def merge_headers(
    headers: list[tuple[bytes, bytes]],
    added: Sequence[tuple[bytes, bytes]],
    *,
    theirs_win: bool = False,
) -> None:
    """Put the throttles' header pairs `added` in a response's `headers` (module docstring).

    Args:
        headers: The response's raw header pairs, changed in place.
        added: The pairs the throttles wrote.
        theirs_win: Whether the response's single-valued fields always keep their values
            (an `HTTPException`'s headers); else the throttles' legacy fields replace the
            response's when they tell of fewer units left.
    """
    if not headers:
        headers.extend(added)
        return
    # The common case, at once: names in lower case (as Starlette writes them, and as the
    # throttles' are), none of the throttles' among the response's. (Loops, not sets: for
    # a few headers they cost half of building dicts and joining names.)
    for name, _ in headers:
        if not name.islower():
            break
    else:
        theirs = dict(headers)
        for name, _ in added:
            if name in theirs or not name.islower():
                break
        else:
            headers.extend(added)
            return
    legacy = _legacy_winner(headers, added, theirs_win)
    if legacy == "ours":  # (the response's legacy fields make way for the throttles')
        headers[:] = [pair for pair in headers if not pair[0].lower().startswith(_LEGACY)]
    present = {name.lower() for name, _ in headers}
    lines: set[tuple[bytes, bytes]] | None = None
    for name, value in added:
        lowered = name.lower()
        if lowered not in present:
            if legacy == "theirs" and lowered.startswith(_LEGACY):
                continue
            present.add(lowered)
            headers.append((name, value))
        elif lowered in LIST_FIELDS:
            if lines is None:
                lines = {(n.lower(), v) for n, v in headers}
            if (lowered, value) not in lines:
                lines.add((lowered, value))
                headers.append((name, value))


def _legacy_winner(
    headers: Sequence[tuple[bytes, bytes]], added: Sequence[tuple[bytes, bytes]], theirs_win: bool
) -> str:
    """Whose legacy fields are sent when both the response and the throttles have some:
    `"ours"` (the throttles', with fewer units left), `"theirs"`, or `""` when one side has
    none."""
    theirs = {n.lower(): v for n, v in headers if n.lower().startswith(_LEGACY)}
    ours = {n.lower(): v for n, v in added if n.lower().startswith(_LEGACY)}
    if not theirs or not ours:
        return ""
    if theirs_win or _REMAINING not in theirs or _REMAINING not in ours:
        return "theirs"
    return "ours" if _count(ours[_REMAINING]) < _count(theirs[_REMAINING]) else "theirs"


def _count(value: bytes) -> float:
    """A `Remaining` value's number; infinity when it is none."""
    try:
        return int(value)
    except ValueError:
        return math.inf
