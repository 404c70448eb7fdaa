"""`InMemoryBackend`: one process's store, bounded, self-sweeping, and lock-free on the decision path."""

from __future__ import annotations

import threading
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable

from traffik.backends.base import ThrottleBackend
from traffik.backends.capacity import Capacity
from traffik.backends.inmemory_decisions import PRIMITIVES, InMemoryDecisions
from traffik.backends.lifecycle import READY
from traffik.backends.locks import LocalLockTable
from traffik.backends.url_options import (
    COMMON_URL_OPTIONS,
    choice,
    number,
    split_url_options,
    whole,
)
from traffik.exceptions import ConfigurationError

if TYPE_CHECKING:
    from traffik.clock import Clock

__all__ = ["InMemoryBackend"]

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


class InMemoryBackend(InMemoryDecisions, ThrottleBackend):
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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A subclass replacing a storage operation (traffik 1.2's test doubles: a store that
        # fails, or counts its calls) is called on every hit: the steps made in place would
        # bypass it, and the generic steps go through it.
        super().__init_subclass__(**kwargs)
        replaced = {
            name
            for name in (*PRIMITIVES, "evaluate", "evaluate_all")
            if getattr(cls, name) is not getattr(InMemoryBackend, name)
        }
        cls._in_place = not replaced
        cls._generic = bool(replaced.intersection(PRIMITIVES))

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
        self._steps: dict[tuple[int, int, int], tuple[Any, Any, Any]] = {}
        """Steps made for `evaluate_all` and `decider_all` (`_step_of`)."""
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

    async def clear(self) -> None:
        """Delete every key of the store."""
        if self._status != READY:
            await self.ensure()
        self._data.clear()
        self._bytes = 0
        self._sweep_keys = []
