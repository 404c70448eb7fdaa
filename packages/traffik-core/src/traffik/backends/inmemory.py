"""`InMemoryBackend`: one process's store, bounded, self-sweeping, and lock-free on the decision path."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from time import time_ns
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Optional

from traffik.backends.base import ThrottleBackend, window_count
from traffik.backends.capacity import Capacity, entry_size
from traffik.backends.inmemory_steps import in_place_step, whole_number
from traffik.backends.locks import LocalLock, LocalLockTable
from traffik.backends.url_options import (
    COMMON_URL_OPTIONS,
    choice,
    number,
    split_url_options,
    whole,
)
from traffik.clock import system_ms
from traffik.decision import Decision
from traffik.exceptions import ConfigurationError
from traffik.strategies.fixed_window import counter_decision, too_late
from traffik.strategies.state import decode_state, encode_state
from traffik.strategies.steps import charged, combine, is_counter

if TYPE_CHECKING:
    from traffik.clock import Clock
    from traffik.rates import Rate
    from traffik.strategies.base import StateStrategy
    from traffik.strategies.steps import Item

__all__ = ["InMemoryBackend"]

_READY = "ready"
_SWEEP_CHUNK = 512
_STORED_KEYS = 16384
"""Store keys a decider remembers (`_decider`) before forgetting them all."""


_URL_OPTIONS = MappingProxyType(
    {
        **COMMON_URL_OPTIONS,
        "max_keys": whole,
        "max_bytes": whole,
        "at_capacity": choice("evict", "refuse"),
        "sweep_interval": number,
    }
)
"""What a `memory://` URL's query may set (`InMemoryBackend.from_url`)."""


class InMemoryBackend(ThrottleBackend):
    """Rate-limit state in a dict of this process: for tests, development and single-worker apps.

    Every operation runs without an `await` between its read and its write, so decisions
    are atomic on the event loop with no lock. Expired keys are swept a chunk at a time as
    the store is written. The store holds at most `max_keys` keys and, when given,
    `max_bytes` bytes (estimated); when it is full, `at_capacity` decides: `"evict"` (the
    default) evicts the sampled key nearest to expiry, `"refuse"` refuses new keys with
    `BackendCapacityError` (the throttle's `on_error` answers). `traffik.backends.capacity`
    has the trade-off.

    traffik 1.2's `cleanup_frequency` is `sweep_interval`; its `number_of_shards` (checked,
    >= 1), `lock_kind`, `lock_pool_size`, `lock_pool_headroom` and `prepopulate_lock_pool`
    are accepted and change nothing: the store is one dict, and locks are made on demand.

    The arguments up to `prepopulate_lock_pool` may be given by position, in traffik 1.2's
    order; the others only by keyword.

    Args:
        namespace: The prefix of every key this backend writes (a non-empty string).
        identifier: The identifier for throttles on this backend that set none.
        persistent: Whether the data survives the end of a backend context
            (`async with backend:`, `backend.lifespan`); False resets the store on exit.
        handle_throttled: The throttled handler for throttles on this backend that set none.
        on_error: The `on_error` policy for throttles on this backend that set none.
        lock_blocking: Whether `lock()` waits by default (None: the process default).
        lock_ttl: The default lock TTL in seconds (None: the process default).
        lock_blocking_timeout: The default lock wait in seconds (None: the process default).
        max_keys: The most keys the store holds (a whole number >= 1).
        max_bytes: The most bytes the store holds, estimated (a whole number >= 1024), or
            None for no byte limit.
        at_capacity: What a full store does with a new key: `"evict"` evicts the sampled
            key nearest to expiry, `"refuse"` raises `BackendCapacityError`.
        sweep_interval: Seconds between two sweeps of expired keys (> 0).
        clock: The backend's time source (seconds); None for the system clock.
        number_of_shards: Accepted from traffik 1.2 and checked (a whole number >= 1);
            changes nothing.
        cleanup_frequency: traffik 1.2's name for `sweep_interval`, in seconds; when given,
            it replaces `sweep_interval`.
        lock_kind: Accepted from traffik 1.2; changes nothing.
        lock_pool_size: Accepted from traffik 1.2; changes nothing.
        lock_pool_headroom: Accepted from traffik 1.2; changes nothing.
        prepopulate_lock_pool: Accepted from traffik 1.2; changes nothing.
        **defaults: More defaults for the throttles on this backend that set none
            (`BackendDefaults`): `shadow`, `cache_refusals`; and
            `fail_fast` (`ThrottleBackend`: whether entering the backend raises when the
            store cannot be reached).

    Raises:
        ConfigurationError: When `number_of_shards`, `max_keys`, `max_bytes`,
            `at_capacity`, `sweep_interval` or `namespace` is invalid, or a default is not
            valid.
        TypeError: When a keyword in `defaults` is unknown.
    """

    default_namespace = "inmemory"
    url_options = _URL_OPTIONS

    def __init__(
        self,
        namespace: str = "inmemory",
        identifier: Callable[..., Any] | None = None,
        persistent: bool = False,
        handle_throttled: Callable[..., Any] | None = None,
        on_error: Any = "throttle",
        lock_blocking: bool | None = None,
        lock_ttl: float | None = None,
        lock_blocking_timeout: float | None = None,
        number_of_shards: int = 3,
        cleanup_frequency: float | None = None,
        lock_kind: str = "unfair",
        lock_pool_size: int = 128,
        lock_pool_headroom: int = 4,
        prepopulate_lock_pool: bool = True,
        *,
        max_keys: int = 1_000_000,
        max_bytes: int | None = None,
        at_capacity: str = "evict",
        sweep_interval: float = 10.0,
        clock: Clock | None = None,
        **defaults: Any,
    ) -> None:
        if (
            isinstance(number_of_shards, bool)
            or not isinstance(number_of_shards, int)
            or number_of_shards < 1
        ):
            raise ConfigurationError(
                f"InMemoryBackend(number_of_shards={number_of_shards!r}): must be a whole number >= 1"
            )
        if cleanup_frequency is not None:
            sweep_interval = cleanup_frequency
        capacity = Capacity(max_keys, max_bytes, at_capacity)
        if not isinstance(sweep_interval, (int, float)) or sweep_interval <= 0:
            raise ConfigurationError(
                f"InMemoryBackend(sweep_interval={sweep_interval!r}): must be a number of seconds > 0"
            )
        super().__init__(
            None,
            namespace=namespace,
            persistent=persistent,
            clock=clock,
            identifier=identifier,
            handle_throttled=handle_throttled,
            on_error=on_error,
            lock_blocking=lock_blocking,
            lock_ttl=lock_ttl,
            lock_blocking_timeout=lock_blocking_timeout,
            **defaults,
        )
        self.capacity = capacity
        self.max_keys = max_keys
        self.sweep_interval = float(sweep_interval)
        self._data: dict[str, list[Any]] = {}
        self._bytes = 0
        self._mutex = threading.Lock()
        """Held by each read-decide-write, so that the event loops of several threads (a
        threaded server, `TestClient` in a thread pool) decide one at a time: a thread may
        be switched out in the middle of one."""
        self._locks = LocalLockTable(self.clock)
        self._sweep_keys: list[str] = []
        self._sweep_ms = round(sweep_interval * 1000)
        self._next_sweep = 0
        self._full_sweep_at = 0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> InMemoryBackend:
        """Build from `memory://` or `memory://<namespace>`, with settings in the query
        (`memory://app?max_keys=100000&at_capacity=refuse`: see `url_options`) or as keywords.

        Args:
            url: The URL: `memory://`, or `memory://<namespace>` to name the namespace
                (unless `namespace` is among `options`).
            **options: The constructor's other keyword arguments.

        Returns:
            A new `InMemoryBackend`.

        Raises:
            ConfigurationError: When the query sets something `url_options` does not list,
                sets a value that does not convert, or sets what a keyword sets too.
        """
        given = "namespace" in options
        address, options = split_url_options(url, cls.__name__, _URL_OPTIONS, options)
        rest = address.split("://", 1)[1].strip("/")
        if rest and "namespace" in options and not given:
            raise ConfigurationError(
                f"InMemoryBackend: URL {url!r} names the namespace twice (its path and "
                "namespace=); keep one"
            )
        if rest and "namespace" not in options:
            options["namespace"] = rest
        return cls(**options)

    async def _open(self) -> None:
        self.connection = self._data

    async def _close(self) -> None:
        self.connection = None

    # -- internals (synchronous: no await between a read and its write) -------------------
    # An entry is `[value, expires_at_ms or None, size, kept_until_ms]`; time is whole
    # milliseconds (`now_ms`), and an entry is gone from its expiry millisecond on. A decision
    # that refuses sets `kept_until_ms` to when the client's state is whole again: until
    # then, a full store does not evict it (`Capacity`), so a throttled client never gets a
    # fresh budget from a flood of new keys. Only a refusal writes it.

    def _live(self, key: str, now: int) -> list[Any] | None:
        entry = self._data.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= now:
            self._remove(key)
            return None
        return entry

    def _remove(self, key: str) -> list[Any] | None:
        entry = self._data.pop(key, None)
        if entry is not None:
            self._bytes -= entry[2]
        return entry

    def _insert(self, key: str, entry: list[Any], now: int) -> None:
        size = entry_size(key, entry[0])
        entry += (size, 0)
        data = self._data
        if self.capacity.full(len(data), self._bytes, size):
            self.capacity.make_room(self, key, size, now)
        data[key] = entry
        self._bytes += size
        if self._sweep_keys or not 0 < self._next_sweep - now <= self._sweep_ms:
            self._step_sweep(now)  # (a pass is due, or the clock was set back since the last)

    def _step_sweep(self, now: int) -> None:
        if not self._sweep_keys:
            self._next_sweep = now + self._sweep_ms
            self._sweep_keys = list(self._data)
        chunk = self._sweep_keys[-_SWEEP_CHUNK:]
        del self._sweep_keys[-_SWEEP_CHUNK:]
        self._sweep(now, chunk)

    def _sweep(self, now: int, keys: list[str]) -> None:
        data = self._data
        for key in keys:
            entry = data.get(key)
            if entry is not None and entry[1] is not None and entry[1] <= now:
                self._remove(key)

    # -- storage -------------------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        """Read a key's value.

        Args:
            key: The namespaced key.

        Returns:
            The value as a string (a strategy state is encoded), or None when the key is
            missing or expired.
        """
        if self._status != _READY:
            await self.ensure()
        entry = self._live(key, self.now_ms())
        if entry is None:
            return None
        value = entry[0]
        if isinstance(value, list):
            return encode_state(value)
        return str(value)

    async def set(self, key: str, value: str, expire: float | None = None) -> None:
        """Store `value` under `key`, replacing any value and expiry.

        Args:
            key: The namespaced key.
            value: The value, stored as a string.
            expire: Seconds until the key expires (at least 1 ms), or None for no expiry.
        """
        if self._status != _READY:
            await self.ensure()
        now = self.now_ms()
        expires_at = None if expire is None else now + _ms(expire)
        entry = self._live(key, now)
        if entry is None:
            self._insert(key, [str(value), expires_at], now)
        else:
            entry[0], entry[1] = str(value), expires_at

    async def delete(self, key: str) -> bool:
        """Delete a key.

        Args:
            key: The namespaced key.

        Returns:
            True when a live key was deleted, False when it was missing or expired.
        """
        if self._status != _READY:
            await self.ensure()
        return self._live(key, self.now_ms()) is not None and self._remove(key) is not None

    def _add(self, key: str, amount: int, ttl_ms: int | None, now: int) -> list[Any]:
        entry = self._data.get(key)
        if entry is None or (entry[1] is not None and entry[1] <= now):  # new, or expired
            if entry is not None:
                self._remove(key)
            entry = [amount, None if ttl_ms is None else now + ttl_ms]
            self._insert(key, entry, now)
            return entry
        value = entry[0]
        entry[0] = (value if type(value) is int else whole_number(value)) + amount
        if ttl_ms is not None and (entry[1] is None or too_late(entry[1] - now, ttl_ms)):
            entry[1] = now + ttl_ms
        return entry

    async def increment(self, key: str, amount: int = 1) -> int:
        """Add `amount` to a counter; a missing or expired key starts from 0, with no expiry.

        Args:
            key: The namespaced key.
            amount: What to add (negative to subtract).

        Returns:
            The counter's new value.
        """
        if self._status != _READY:
            await self.ensure()
        with self._mutex:
            return int(self._add(key, amount, None, self.now_ms())[0])

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: float = 60) -> int:
        """Add `amount` to a counter, in one step; a key created by this call expires after `ttl`.

        A key that exists and has no expiry is given one; so is a key that would outlive
        `ttl` by more than `AHEAD_MS` (`FixedWindow`'s `too_late`: opened before the clock
        stepped back, or with a longer `ttl`), its count kept.

        Args:
            key: The namespaced key.
            amount: What to add.
            ttl: Seconds until a key created here expires (at least 1 ms).

        Returns:
            The counter's new value, a `WindowCount` that also carries the milliseconds
            until the key is gone (`ttl_ms`).
        """
        if self._status != _READY:
            await self.ensure()
        now = self.now_ms()
        with self._mutex:
            entry = self._add(key, amount, round(ttl * 1000) or 1, now)
        count = window_count(entry[0], entry[1] - now)
        count.at = now  # type: ignore[attr-defined]  # (when: `Decision.at`, for refunds)
        return count

    async def expire(self, key: str, seconds: float) -> bool:
        """Set a live key to expire after `seconds`.

        Args:
            key: The namespaced key.
            seconds: Seconds from now until the key expires (at least 1 ms).

        Returns:
            True when the key exists, False when it is missing or expired.
        """
        if self._status != _READY:
            await self.ensure()
        now = self.now_ms()
        entry = self._live(key, now)
        if entry is None:
            return False
        entry[1] = now + _ms(seconds)
        return True

    async def ttl(self, key: str) -> float | None:
        """Milliseconds until `key` is gone (it exists for `ttl - 1` more ms).

        Args:
            key: The namespaced key.

        Returns:
            The milliseconds left, or None when the key is missing, expired or immortal.
        """
        if self._status != _READY:
            await self.ensure()
        now = self.now_ms()
        entry = self._live(key, now)
        if entry is None or entry[1] is None:
            return None
        return entry[1] - now

    async def multi_get(self, *keys: str) -> list[str | None]:
        """Read several keys (as `get`).

        Args:
            *keys: The namespaced keys.

        Returns:
            Each key's value, or None, in the order given.
        """
        return [await self.get(key) for key in keys]

    async def multi_set(self, items: Mapping[str, str], expire: float | None = None) -> None:
        """Store several values (as `set`).

        Args:
            items: The namespaced keys and their values.
            expire: Seconds until each key expires, or None for no expiry.
        """
        for key, value in items.items():
            await self.set(key, value, expire)

    async def keys(self) -> list[str]:
        """Every live key, namespaced.

        Returns:
            The keys that exist and have not expired.
        """
        if self._status != _READY:
            await self.ensure()
        now = self.now_ms()
        return [k for k, e in list(self._data.items()) if e[1] is None or e[1] > now]

    async def scan(self, prefix: str, limit: int | None = None) -> list[str]:
        """The live keys that start with `prefix`; for `python -m traffik` and admin tools.

        Args:
            prefix: A namespaced key prefix (from `get_key`).
            limit: The most keys to return, or None for all.

        Returns:
            The matching keys.
        """
        found = [key for key in await self.keys() if key.startswith(prefix)]
        return found if limit is None else found[:limit]

    def get_lock(self, name: str, ttl: float | None = None, reentrant: bool = False) -> LocalLock:
        """A lock of this process, made on demand and shared by `name`.

        Args:
            name: The lock's name.
            ttl: Seconds after which a held lock is released, or None for never.
            reentrant: Whether the task that holds the lock may acquire it again.

        Returns:
            The lock.
        """
        return self._locks.get(name, ttl, reentrant)

    async def clear(self) -> None:
        """Delete every key of the store."""
        if self._status != _READY:
            await self.ensure()
        self._data.clear()
        self._bytes = 0
        self._sweep_keys = []

    # -- the decision step ---------------------------------------------------------------
    # Each runs without an await between its reads and its writes: atomic on the event loop.

    def _state(self, entry: list[Any] | None) -> list[int] | None:
        if entry is None:
            return None
        state = entry[0]
        return state if isinstance(state, list) else decode_state(state)

    def _save(
        self, key: str, entry: list[Any] | None, state: list[int], ttl_ms: int, now: int
    ) -> list[Any]:
        if entry is None:
            entry = [state, now + ttl_ms]
            self._insert(key, entry, now)
        else:
            entry[0], entry[1] = state, now + ttl_ms
        return entry

    def decider(
        self, strategy: Any, rate: Rate, cost: int, kind: int
    ) -> Optional[Callable[[str], Optional[Decision]]]:
        """Decisions of a built-in strategy at one rate and cost, made in place: the
        throttle's hot path.

        The same step as `strategy.decide` (`traffik.backends.inmemory_steps`), without a
        coroutine. A decision is None when it cannot be made here: the backend is not ready,
        or a test replaced `increment_with_ttl` or `evaluate` on this instance
        (`unittest.mock.patch.object`); the caller then awaits `strategy.decide`, which goes
        through them. The rate and cost were checked when the throttle was built (a limited
        rate, a cost the strategy can admit).

        Args:
            strategy: The built-in strategy that decides.
            rate: The rate to apply.
            cost: The units each hit spends.
            kind: How to decide in place (`traffik.strategies.steps.in_place_kind`).

        Returns:
            A callable of a throttle's key (not namespaced) returning the `Decision` or None,
            or None when `kind` cannot be decided in place.
        """
        return self._decider(strategy, rate, cost, kind, self._prefix, strategy.suffix)

    def decide_now(
        self, key: str, strategy: Any, rate: Rate, cost: int, kind: int
    ) -> Optional[Decision]:
        """One decision made in place on the namespaced `key`, as `decider` makes them.

        Args:
            key: The namespaced key of the client's state.
            strategy: The built-in strategy that decides.
            rate: The rate to apply.
            cost: The units this hit spends.
            kind: How to decide in place (`traffik.strategies.steps.in_place_kind`).

        Returns:
            The `Decision`, or None when it cannot be made here.
        """
        decide = self._decider(strategy, rate, cost, kind, "", "")
        return None if decide is None else decide(key)

    def _decider(
        self, strategy: Any, rate: Rate, cost: int, kind: int, prefix: str, suffix: str
    ) -> Optional[Callable[[str], Optional[Decision]]]:
        step = in_place_step(strategy, rate, cost, kind)
        if step is None:
            return None
        own, data = self.__dict__, self._data
        take, give_back = self._mutex.acquire, self._mutex.release  # (`with` costs twice)
        stored_keys: dict[str, str] = {}  # a throttle's keys are few and come again

        def decide(key: str) -> Optional[Decision]:
            if self._status != _READY or "increment_with_ttl" in own or "evaluate" in own:
                return None
            now_ms = self.now_ms
            now = time_ns() // 1_000_000 if now_ms is system_ms else now_ms()
            stored = stored_keys.get(key)
            if stored is None:
                if len(stored_keys) >= _STORED_KEYS:
                    stored_keys.clear()
                stored = stored_keys[key] = prefix + key + suffix
            take()
            try:
                entry = data.get(stored)
                if entry is not None:
                    expires = entry[1]
                    if expires is None or expires > now:
                        decision = step(entry, now)
                        if not decision.allowed:
                            entry[3] = now + decision.reset_ms
                        return decision
                    self._remove(stored)
                entry = [None, None]
                decision = step(entry, now)
                if entry[0] is not None:
                    self._insert(stored, entry, now)
                    if not decision.allowed:
                        entry[3] = now + decision.reset_ms
                return decision
            finally:
                give_back()

        return decide

    async def evaluate(
        self, key: str, strategy: StateStrategy, rate: Rate, cost: int, *, commit: bool = True
    ) -> Decision:
        """The whole read-decide-write of one state, in one synchronous step.

        Args:
            key: The namespaced key of the state.
            strategy: The strategy whose `transition` decides.
            rate: The rate to apply.
            cost: The units this hit spends.
            commit: Whether to save the new state; False only decides.

        Returns:
            The `Decision`.
        """
        if self._status != _READY:
            await self.ensure()
        with self._mutex:
            now = self.now_ms()
            entry = self._live(key, now)
            decision, new_state, ttl_ms = strategy.transition(self._state(entry), now, rate, cost)
            if commit and new_state is not None:
                entry = self._save(key, entry, new_state, ttl_ms, now)
                decision.at = now
            if commit and not decision.allowed and entry is not None:
                entry[3] = now + decision.reset_ms
            return decision

    async def evaluate_all(self, items: Sequence[Item], *, commit: bool = True) -> Decision:
        """Every item decided, then charged all or nothing, in one synchronous step.

        Args:
            items: The items (key, strategy, rate, cost) to decide together.
            commit: Whether to charge the items; False only decides.

        Returns:
            The combined `Decision` of every item.
        """
        if self._status != _READY:
            await self.ensure()
        with self._mutex:
            now = self.now_ms()
            parts: list[Decision] = []
            pending: list[tuple[list[Any] | None, list[int] | None, int]] = []
            counters = []
            for item in items:
                entry = self._live(item.key, now)
                counter = is_counter(item.strategy)
                counters.append(counter)
                if counter:
                    count = whole_number(entry[0]) if entry is not None else 0
                    left = entry[1] - now if entry is not None and entry[1] is not None else None
                    if commit and entry is not None and too_late(left, item.rate.expire):
                        left = item.rate.expire  # (cut to one period, charged or not)
                        entry[1] = now + left
                    parts.append(counter_decision(count, left, item.rate, item.cost))
                    pending.append((entry, None, 0))
                else:
                    decision, new_state, ttl_ms = item.strategy.transition(
                        self._state(entry), now, item.rate, item.cost
                    )
                    parts.append(decision)
                    pending.append((entry, new_state, ttl_ms))
            decision = combine(parts)
            if commit:
                for item, charge, counter, (entry, new_state, ttl_ms) in zip(
                    items, charged(parts, items), counters, pending
                ):
                    if charge:
                        if counter:
                            entry = self._add(item.key, item.cost, item.rate.expire, now)
                        elif new_state is not None:
                            entry = self._save(item.key, entry, new_state, ttl_ms, now)
                if not decision.allowed:  # (kept until each rate's state is whole again)
                    for part, (entry, _, _) in zip(parts, pending):
                        if entry is not None:
                            entry[3] = now + part.reset_ms
            decision.at = now
            return decision

    async def refund_all(self, items: Sequence[Item]) -> None:
        """Every item's cost given back (never past a full budget), in one synchronous step.

        Args:
            items: The items (key, strategy, rate, cost) to refund; a missing key is skipped.
        """
        if self._status != _READY:
            await self.ensure()
        with self._mutex:
            now = self.now_ms()
            for item in items:
                entry = self._live(item.key, now)
                if entry is None:
                    continue
                if is_counter(item.strategy):
                    entry[0] = max(whole_number(entry[0]) - item.cost, 0)
                    continue
                state = self._state(entry)
                if state is not None:
                    new_state, ttl_ms = item.strategy.refund(state, now, item.rate, item.cost)
                    self._save(item.key, entry, new_state, ttl_ms, now)


def _ms(seconds: float) -> int:
    """Whole milliseconds for a time to live in seconds: rounded to the nearest, at least 1."""
    return max(round(seconds * 1000), 1)
