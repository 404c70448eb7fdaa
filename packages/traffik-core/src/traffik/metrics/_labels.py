"""The `backend` label of a decision's metrics: the backend's class name."""

from __future__ import annotations

__all__ = ["backend_label", "class_label"]

_names: dict[type, str] = {}


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
