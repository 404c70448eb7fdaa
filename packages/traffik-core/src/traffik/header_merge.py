"""Throttles' headers put on a response that has headers already: `merge_headers`.

A response can get rate-limit headers from several writers: the throttles of a
`ThrottleMiddleware`, those of the route (a dependency, a decorator), a refusal's own
`Retry-After`, and the endpoint itself (an `HTTPException`'s headers, a copy of
`get_headers`). Each field is then sent once, or as a list where its syntax is one:

- `RateLimit` and `RateLimit-Policy` are lists, an item per policy: a line of the throttles'
  is added unless the response has that very line already.
- Every other field holds one value, and a field the response has keeps its value; but the
  legacy fields (`X-RateLimit-*`) speak of the throttle with the fewest units left, so when
  the throttles' `X-RateLimit-Remaining` is lower than the response's, theirs replace the
  response's `X-RateLimit-*` values (not with `theirs_win`: an `HTTPException`'s own headers
  always win).

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
    theirs, ours = dict(headers), dict(added)
    if (
        theirs.keys().isdisjoint(ours) and b"".join(theirs).islower() and b"".join(ours).islower()
    ):  # (the common case: no field of the throttles' there, names in lower case as ASGI's)
        headers.extend(added)
        return
    present: dict[bytes, int] = {}
    for index, (name, _) in enumerate(headers):
        present.setdefault(name.lower(), index)
    fewer = False
    if not theirs_win and _REMAINING in present:
        for name, value in added:
            if name.lower() == _REMAINING:
                fewer = _count(value) < _count(headers[present[_REMAINING]][1])
                break
    lines: set[tuple[bytes, bytes]] | None = None
    for name, value in added:
        lowered = name.lower()
        found = present.get(lowered)
        if found is None:
            present[lowered] = len(headers)
            headers.append((name, value))
        elif lowered in LIST_FIELDS:
            if lines is None:
                lines = {(n.lower(), v) for n, v in headers}
            if (lowered, value) not in lines:
                lines.add((lowered, value))
                headers.append((name, value))
        elif fewer and lowered.startswith(_LEGACY):
            headers[found] = (headers[found][0], value)


def _count(value: bytes) -> float:
    """A `Remaining` value's number; infinity when it is none."""
    try:
        return int(value)
    except ValueError:
        return math.inf
