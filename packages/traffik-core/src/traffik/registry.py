"""`ThrottleRegistry`: throttles by uid, the rules attached to them, and switching them off and on.

Every throttle registers in one (`GLOBAL_REGISTRY` unless given `registry=`), once it is
fully built. A uid registered again is a new registration that replaces the old one and
forgets its rules: an app rebuilt for each test builds its throttles again, and two throttles
sharing a uid share their counters anyway. `ThrottleRegistry(strict=True)` refuses a uid whose
throttle is still alive instead, as traffik 1.2 did everywhere. A registration ends when its
throttle is garbage-collected, or with `unregister`/`clear`.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Optional

from traffik.exceptions import ConfigurationError
from traffik.rules import (
    Bypass,
    BypassThrottleRule,
    Rule,
    ThrottleRule,
    bypass_if,
    sort_rules,
    throttle_if,
)

__all__ = [
    "GLOBAL_REGISTRY",
    "Bypass",
    "BypassThrottleRule",
    "Rule",
    "ThrottleRegistry",
    "ThrottleRule",
    "bypass_if",
    "throttle_if",
]


class _Ref(weakref.ref):
    """A weak reference to a registered throttle that knows its uid."""

    __slots__ = ("uid",)
    uid: str


class ThrottleRegistry:
    """Throttles by uid, and the rules attached to each uid; safe to use from several threads."""

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self._lock = threading.RLock()
        self._refs: dict[str, Optional[_Ref]] = {}
        self._rules: dict[str, set[Rule | Bypass]] = {}

    def __repr__(self) -> str:
        return f"ThrottleRegistry({len(self)} uids)"

    def _released(self, ref: _Ref) -> None:
        with self._lock:
            if self._refs.get(ref.uid) is ref:
                self._forget(ref.uid)

    def _forget(self, uid: str) -> None:
        self._refs.pop(uid, None)
        self._rules.pop(uid, None)

    def register(self, uid: str, throttle: Any = None) -> None:
        """Register `uid` (and its throttle, held weakly), replacing an earlier registration."""
        with self._lock:
            if self.strict and self.get_throttle(uid) is not None:
                raise ConfigurationError(
                    f"throttle uid {uid!r} must be unique in this strict registry; a live throttle "
                    "holds it. Pick another uid, or unregister it first"
                )
            self._forget(uid)
            ref = None
            if throttle is not None:
                ref = _Ref(throttle, self._released)
                ref.uid = uid
            self._refs[uid] = ref

    def unregister(self, uid: str) -> None:
        """Forget `uid` and its rules; no error when it is not registered."""
        with self._lock:
            self._forget(uid)

    def exists(self, uid: str) -> bool:
        return uid in self._refs

    exist = exists
    """traffik 1.2's docs spell it `exist`."""

    def __contains__(self, uid: object) -> bool:
        return uid in self._refs

    def count(self) -> int:
        return len(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def get_throttle(self, uid: str) -> Any:
        """The live throttle registered as `uid`, or None (a dead one is unregistered)."""
        with self._lock:
            ref = self._refs.get(uid)
            throttle = ref() if ref is not None else None
            if ref is not None and throttle is None:
                self._forget(uid)
            return throttle

    def add_rules(self, target_uid: str, /, *rules: Rule | Bypass) -> None:
        """Attach `rules` to the throttle registered as `target_uid`; they apply from its next hit."""
        if not rules:
            return
        checked = sort_rules(rules)
        with self._lock:
            if target_uid not in self._refs:
                raise ConfigurationError(
                    f"No throttle registered with UID {target_uid!r}; build the throttle first, "
                    "then add rules to it"
                )
            self._rules.setdefault(target_uid, set()).update(checked)
            throttle = self.get_throttle(target_uid)
        refresh = getattr(throttle, "refresh_rules", None)
        if refresh is not None:
            refresh()

    def get_rules(self, uid: str) -> list[Rule | Bypass]:
        """The rules attached to `uid` through the registry (a copy; [] when none)."""
        with self._lock:
            return list(self._rules.get(uid, ()))

    async def disable(self, uid: str) -> bool:
        """Disable the throttle registered as `uid`; True if there was a live one."""
        throttle = self.get_throttle(uid)
        if throttle is None:
            return False
        await throttle.disable()
        return True

    async def enable(self, uid: str) -> bool:
        """Enable the throttle registered as `uid`; True if there was a live one."""
        throttle = self.get_throttle(uid)
        if throttle is None:
            return False
        await throttle.enable()
        return True

    async def disable_all(self) -> None:
        for uid in list(self._refs):
            await self.disable(uid)

    async def enable_all(self) -> None:
        for uid in list(self._refs):
            await self.enable(uid)

    def clear(self) -> None:
        """Forget every uid and every rule."""
        with self._lock:
            self._refs.clear()
            self._rules.clear()


GLOBAL_REGISTRY = ThrottleRegistry()
"""The registry of every throttle built without `registry=`."""
