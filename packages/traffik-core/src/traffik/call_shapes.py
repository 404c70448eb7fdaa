"""How Traffik calls the functions a user gives it, and the check that one can be called so."""

from __future__ import annotations

import inspect
from typing import Any

from traffik.exceptions import ConfigurationError

__all__ = ["CALLED_AS", "check_called_as"]

CALLED_AS = {
    "rate": ("connection", "context"),
    "cost": ("connection", "context"),
    "identifier": ("connection",),
    "handle_throttled": ("connection", "wait_ms", "throttle", "context"),
    "charge_when": ("outcome",),
    "on_error": ("connection", "exc_info"),
}
"""The arguments each callable setting is called with, positionally."""

_HOW_MANY = {1: "one positional argument", 2: "two positional arguments"}


def check_called_as(function: Any, name: str, owner: str) -> None:
    """Refuse `function` as the setting `name` unless it can be called as Traffik calls it
    (`CALLED_AS`), so a mistake fails when it is given instead of on every request (a
    signature Python cannot read is let through)."""
    arguments = CALLED_AS[name]
    listed = ", ".join(arguments)
    if not callable(function):
        raise ConfigurationError(
            f"{owner}: {name}={function!r} must be a function called as ({listed}), or None"
        )
    try:
        inspect.signature(function).bind(*arguments)
    except TypeError:
        count = _HOW_MANY.get(len(arguments), f"{len(arguments)} positional arguments")
        raise ConfigurationError(
            f"{owner}: {name}={function!r} is called as ({listed}); it must take {count}, "
            f"e.g. def {name}({listed}): ..."
        ) from None
    except ValueError:
        pass
