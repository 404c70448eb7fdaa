"""The labels of a decision's metrics: the backend's class name, and the throttle's uid, bounded."""

from __future__ import annotations

import logging

from traffik.logs import QuietLog

__all__ = ["MAX_THROTTLES", "OTHER_THROTTLES", "backend_label", "class_label", "throttle_label"]

MAX_THROTTLES = 1000
"""Throttle uids an observer labels its series with; decisions of any further uid are counted
under `OTHER_THROTTLES`, so throttles built per request with uids of their own (a user's id
in the uid) cannot grow the series without bound."""
OTHER_THROTTLES = "_other"

_names: dict[type, str] = {}
_log = QuietLog(logging.getLogger("traffik"), interval=3600.0)


def class_label(kind: type) -> str:
    """`"InMemoryBackend"`, `"RedisBackend"`, ...; `"none"` for a decision without a backend."""
    return "none" if kind is type(None) else kind.__name__


def backend_label(backend: object) -> str:
    """The label of `backend`'s class, cached per class."""
    kind = type(backend)
    name = _names.get(kind)
    if name is None:
        name = _names[kind] = class_label(kind)
    return name


def throttle_label(uid: str, uids: set[str]) -> str:
    """The `throttle` label for `uid` in an observer that has labelled `uids` so far: the uid
    itself, or `OTHER_THROTTLES` once `MAX_THROTTLES` uids are labelled (logged, at most
    once an hour). Called for a series not seen before, so it costs nothing per decision."""
    if uid in uids:
        return uid
    if len(uids) < MAX_THROTTLES:
        uids.add(uid)
        return uid
    _log.log(
        logging.WARNING,
        ("metrics", id(uids)),
        "metrics label %d throttle uids already; decisions of uid %r and other new ones are "
        "counted as throttle=%r (throttles built per request with a uid of their own? give "
        "them one uid, and put the client in the identifier)",
        MAX_THROTTLES,
        uid,
        OTHER_THROTTLES,
    )
    return OTHER_THROTTLES
