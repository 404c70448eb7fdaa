"""`MemcachedBackend`: rate-limit state in one or more memcached servers, without locks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from time import monotonic
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Optional

from traffik.backends import url_options as query
from traffik.backends.base import ThrottleBackend
from traffik.backends.health import circuit_policy
from traffik.backends.lanes import Lanes
from traffik.backends.memcached._commands import MemcachedCommands
from traffik.backends.memcached._item_size import ITEM_BYTES_MEANING, MIN_ITEM_BYTES
from traffik.backends.memcached._keys import KeySpace
from traffik.backends.memcached._lock import Hold
from traffik.backends.memcached._node import Node
from traffik.backends.memcached._options import at_least, seconds
from traffik.backends.memcached._ring import Ring
from traffik.backends.memcached._servers import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    Server,
    ServerSpec,
    parse_servers,
    parse_url,
)
from traffik.backends.memcached._sliding import Counted
from traffik.backends.memcached._steps import MemcachedSteps
from traffik.backends.memcached._transition import Hit
from traffik.backends.memcached._window_counter import MemcachedCounter
from traffik.backends.store_locks import finished
from traffik.exceptions import BackendConnectionError, ConfigurationError
from traffik.keyparts import escape

if TYPE_CHECKING:
    from traffik.clock import Clock
    from traffik.decision import Decision
    from traffik.rates import Rate
    from traffik.strategies.steps import Item

__all__ = ["MemcachedBackend"]


class MemcachedBackend(MemcachedCounter, MemcachedCommands, MemcachedSteps, ThrottleBackend):
    """Rate-limit state shared through memcached: `memcached://host:11211` or several nodes.

    - Persistent by default (`persistent=True`): the state is shared by every instance of the
      app, so one instance shutting down (a deploy, a worker recycle) resets nothing. Pass
      `persistent=False` to have `backend.lifespan` clear the namespace on shutdown.
    - Every built-in strategy decides without a lock: `FixedWindow` is one `incr` on an
      open window; `SlidingWindowCounter` one `incr` of its window's counter, plus a `decr`
      giving back a refused hit's units, or only a `get` while the key is refusing (see
      `_sliding`), and a `get` of the next window's counter for a refused hit whose wait
      reaches that window (in the same `get` while the key is refusing), so that the wait
      told counts what a clock that stepped back left there; the other strategies read
      their state with `gets`, run the strategy's transition here, and write it back with
      `cas` (or `add` for a new key), retrying with a short random backoff when another
      client changed the key in between (at most `ATTEMPTS` times, then `BackendError`). A
      rejected request writes nothing.
    - Concurrent hits on one key in one process are coalesced (`_lanes`): while a round is
      in flight for the key, later hits queue, and the next round decides them all, in
      arrival order and each as if alone, on one read of the state, written once (one
      `gets` + `cas`, or one `incr` for a sliding window). Fifty hits at once on one key
      cost about two rounds, not fifty racing compare-and-swaps. A throttle's `FixedWindow`
      hits on one key add up the same way, in one `incr` per round (`waited_decider`).
    - Several items decided as one (`evaluate_all`: a throttle's rates, throttles combined)
      live in different memcached items, maybe on different nodes, so they are taken one
      after another, in order, each as above, until one refuses; the units the items before
      it took are then given back (a state's `refund` under `cas`; a window counter's
      `decr`, in the window it counted in), and the items after it are only read, one `get`
      per node. A refused hit so leaves every item as it found it: a fixed-window counter
      that refuses gives its count of the hit back too (alone, a `FixedWindow` keeps counting
      what it refuses), as its refusal may be owed to units that other hits hold there for a
      moment. Two rates cost 2 commands for `FixedWindow` and `SlidingWindowCounter` and 4
      for the others when allowed, 4, 3 and 5 when the second refuses, 3, 2 and 2 when the
      first does (as the server counts them, a `get` once per key: a refusing
      `SlidingWindowCounter` reads the next window's counter too, so 4 when the second
      refuses, 3 when the first does, 4 when both do).
      Between taking an earlier item and giving it back (the round trips to the later
      items, about a millisecond on a LAN) other clients see that item charged: a hit
      needing those units is refused meanwhile (a transient extra refusal), and none is
      admitted on them. The give-back is exact unless another hit changed the state in that
      moment; then it is the strategy's `refund` at the give-back, which (for a bucket, a
      GCRA, a log, or a sliding window that just turned) may also return what the moment
      regained, at most the rate over that moment (0.1 unit at 100/s over 1 ms), admitted
      that much early. A failure part way gives back what was taken, then raises; a
      give-back that fails is logged, and its units return as the limit refills. Once
      begun (its first item's first command sent), such a step runs to its end even if its
      caller is cancelled meanwhile (`finished`): charged on every item or on none. A
      caller cancelled before that (the step waiting for a connection, the namespace
      generation, or a round in flight on its first key) stops it: it sends nothing, and
      takes nothing (`_gate`).
    - `refund_all` gives each item's cost back, never past a full budget, the items in
      parallel: a state's `refund` under `cas`; a window counter lowered (not below 0) in
      its window under `cas`, and a closed window left alone. Once asked for, it runs to its
      end even if its caller is cancelled meanwhile (`finished`), even before it sent
      anything (the throttle counts a refund it asked the store for as given back): a
      refund asked for lands on every item.
    - Time comes from this host: `clock` (default: the wall clock). Memcached has no
      clock a client can read, so app hosts should keep their clocks in sync (NTP).
    - A fixed-window counter stores its window's end (a millisecond of `clock`) beside its
      count, so every `increment_with_ttl` answers the exact time left (a `WindowCount`) and
      the window closes on `clock` to the millisecond; `ttl()` knows only such counters
      (memcached does not report TTLs). Limits up to 250 000 per window (`WINDOW_LIMIT`)
      are exact; a larger `FixedWindow` limit is not enforced exactly.
    - `SlidingWindowLog` and `LeakyBucketWithQueue` keep one entry per hit in one item of at
      most `max_item_bytes` (memcached's `-I`, 1 MiB by default): a rate whose state may not
      fit is refused (`validate`: `ConfigurationError` naming the largest limit that fits,
      about 65 000 at 1 MiB) when a throttle with this backend is built, or on first use.
    - Keys are made safe for memcached (see `safe_key`); time to live rounds up to whole
      seconds plus one (see `exptime`), and goes out as a Unix time beyond 30 days.
      Memcached keeps no item past 03:14:07 UTC on 19 January 2038 (its `exptime` is a
      signed 32-bit number), so a window that would end later ends then on Memcached.
    - `clear()`/`reset()` moves the namespace to a new generation, a number kept in
      memcached (`<namespace>:__gen__`) and part of every key; the old keys are left for
      memcached to expire or evict. Other processes see a clear within
      `generation_refresh` seconds (default 1), the longest they cache the generation: so
      each process re-reads it (one `get` per node) once per `generation_refresh` while it
      is busy, and a fixed window costs `1 + 1 / (decisions per second * refresh)` commands
      per decision, not exactly 1. A clear made in another process is only visible through
      that read (its old keys stay valid), so it cannot be skipped, or read only after a
      miss, without leaving processes counting in the old generation, each against its own
      counter, until their windows end; pipelining the `get` with an `incr` would save its
      round trip but not the command. A larger `generation_refresh` makes it rarer.
    - With several nodes each key lives on one, chosen by rendezvous hashing; a node that is
      down fails only the operations on its keys (`BackendConnectionError`, which the
      throttle's `on_error` handles), and the backend reconnects by itself when it returns.
    - Each node has a store-health circuit (`circuit`, `traffik.backends.health`), on by
      default: after a few timeouts or connection failures in a row, operations on that
      node fail at once (`CircuitOpenError`) while a background `version` probes it; the
      first answer closes it. `circuit=False` never refuses; a `CircuitPolicy` sets the
      thresholds. Initialising asks every node its `version`: a node where another server
      answers (a Redis, a web server) is a bad setting, `ConfigurationError` naming it and
      what answers; no node answering raises `BackendConnectionError`, which, when the
      backend is entered (`lifespan`), does not stop the app unless `fail_fast=True` (see
      `BackendContext`); `initialize()` alone raises it either way.
    - `connect_timeout` bounds opening a connection, `command_timeout` each operation
      from when it has its connection (sending, reading the reply), or up to a quarter
      longer: a watchdog that ticks four times per `command_timeout`, only while commands
      are pending, closes the connection of an operation that has run too long (so no timer
      is set per command). While all `pool_size` connections are busy, an operation waits
      for one as long as the server answers the operations ahead (it times out with them
      when the server answers none for `command_timeout`), at most `connect_timeout +
      command_timeout` as on Redis; then it fails (`BackendConnectionError`) without
      counting on the circuit: a burst queued on a server that answers is no outage.
    - Locks are memcached keys with a time to live, `DEFAULT_LOCK_TTL` (5 s) unless given.
    - traffik 1.2's options are accepted: `track_keys` and `number_of_tracking_shards`
      (`clear()` always works, through generations), `pool_minsize` (connections open on
      demand) and `lock_contention_threshold` change nothing; `connection_args` must be
      empty (no TLS or socket options).
    - Counters: memcached's are unsigned, so `decrement` stops at 0 on an existing counter
      and, as in traffik 1.2, stores `-amount` for a missing one.
    - A value no strategy wrote at a strategy's key (another program's text) is no state,
      as on Redis: a state, a fixed window or a sliding window's counter reads as missing,
      and the hit that meets it replaces it under `cas` (one of the hits meeting it at once
      does; the others count in what it wrote).

    Args:
        url: `memcached://host:port[,host:port...]` (the port defaults to 11211); give it
            or `host`/`port` or `servers`, not several.
        host: The host of a single node.
        port: The port of a single node.
        servers: Several nodes, such as `["h1:11211", ("h2", 11211)]`.
        pool_size: Connections per node (a whole number >= 1).
        namespace: The prefix of every key this backend writes (a non-empty string).
        clock: The backend's time source (seconds); None for the wall clock.
        connect_timeout: Seconds opening a connection may take (> 0).
        command_timeout: Seconds an operation may take once it has its connection (> 0; up
            to a quarter longer, see above).
        generation_refresh: The longest, in seconds, a process caches the namespace's
            generation (>= 0).
        max_item_bytes: The servers' item size limit, in bytes (memcached's `-I`; at least
            1024).
        persistent: Whether the namespace survives the end of a backend context
            (`backend.lifespan`); False clears it on exit.
        pool_minsize: Accepted from traffik 1.2 and checked (from 0 to `pool_size`);
            changes nothing.
        connection_args: Accepted from traffik 1.2; must be empty.
        track_keys: Accepted from traffik 1.2; changes nothing.
        number_of_tracking_shards: Accepted from traffik 1.2 and checked (>= 1); changes
            nothing.
        lock_contention_threshold: Accepted from traffik 1.2 and checked (>= 1); changes
            nothing.
        circuit: Each node's store-health circuit: True for the default policy, False to
            never refuse, or a `CircuitPolicy`.
        **defaults: Defaults for the throttles on this backend that set none
            (`BackendDefaults`): `identifier`, `handle_throttled`, `on_error`, `lock_ttl`,
            `lock_blocking`, `lock_blocking_timeout`, `shadow`, `cache_refusals`; and
            `fail_fast` (`ThrottleBackend`: whether entering the backend raises when no node
            can be reached).

    Raises:
        ConfigurationError: When `connection_args` is not empty, `pool_minsize` is above
            `pool_size`, `url` is given with
            `host`/`port` or `servers` (or `servers` with `host`/`port`), a URL or server is
            malformed, or another argument or default is invalid.
        TypeError: When a keyword in `defaults` is unknown.
    """

    default_namespace = "memcached"
    caches_refusals = True
    url_options = MappingProxyType(
        {
            **query.COMMON_URL_OPTIONS,
            "connect_timeout": query.number,
            "command_timeout": query.number,
            "pool_size": query.whole,
            "pool_minsize": query.whole,
            "generation_refresh": query.number,
            "max_item_bytes": query.whole,
            "track_keys": query.flag,
            "circuit": query.flag,
        }
    )
    """What a `memcached://` URL's query may set, for `from_url`
    (`memcached://h1:11211,h2:11211?namespace=app&command_timeout=0.25`)."""
    reports_ttl = False
    """`ttl()` knows only fixed-window counters: its None means "unknown", not "no expiry"."""

    def __init__(
        self,
        url: Optional[str] = None,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        servers: Optional[Iterable[ServerSpec]] = None,
        pool_size: int = 2,
        namespace: str = "memcached",
        clock: Optional[Clock] = None,
        connect_timeout: float = 1.0,
        command_timeout: float = 0.5,
        generation_refresh: float = 1.0,
        max_item_bytes: int = 1024 * 1024,
        persistent: bool = True,
        pool_minsize: int = 1,
        connection_args: Optional[Mapping[str, Any]] = None,
        track_keys: bool = False,
        number_of_tracking_shards: int = 16,
        lock_contention_threshold: int = 1,
        circuit: Any = True,
        **defaults: Any,
    ) -> None:
        owner = type(self).__name__
        # traffik 1.2's options: checked as it checked them, and otherwise without effect.
        at_least(owner, "pool_minsize", pool_minsize, 0)
        at_least(owner, "number_of_tracking_shards", number_of_tracking_shards, 1)
        at_least(owner, "lock_contention_threshold", lock_contention_threshold, 1)
        if connection_args:
            raise ConfigurationError(
                f"{owner}(connection_args={connection_args!r}): connection options (TLS, say) are "
                "not supported; the backend opens plain TCP connections, so reach memcached over "
                "a trusted network or a local TLS tunnel"
            )
        custom_address = host != DEFAULT_HOST or port != DEFAULT_PORT
        if url is not None and (custom_address or servers is not None):
            raise ConfigurationError(
                f"{owner}: specify either url= or host=/port= (or servers=), not both; got url={query.redact_url(url)!r}"
            )
        if servers is not None and custom_address:
            raise ConfigurationError(f"{owner}: specify either servers= or host=/port=, not both")
        at_least(owner, "pool_size", pool_size, 1)
        if pool_minsize > pool_size:
            raise ConfigurationError(
                f"{owner}(pool_minsize={pool_minsize}, pool_size={pool_size}): pool_minsize must "
                f"be <= pool_size, from 0 to {pool_size} (it changes nothing: connections open on "
                "demand, up to pool_size per node)"
            )
        at_least(owner, "max_item_bytes", max_item_bytes, MIN_ITEM_BYTES, ITEM_BYTES_MEANING)
        if url is not None:
            nodes = parse_url(url)
        elif servers is not None:
            nodes = parse_servers(servers)
        else:
            nodes = parse_servers([(host, port)])
        super().__init__(None, namespace=namespace, persistent=persistent, clock=clock, **defaults)
        self.servers: list[Server] = nodes
        self.pool_size = pool_size
        self.connect_timeout = seconds(owner, "connect_timeout", connect_timeout)
        self.command_timeout = seconds(owner, "command_timeout", command_timeout)
        self.generation_refresh = seconds(
            owner, "generation_refresh", generation_refresh, zero=True
        )
        self._keys = KeySpace(escape(self.namespace))
        policy = circuit_policy(owner, circuit)
        self._nodes = [
            Node(
                server,
                self._keys,
                pool_size=pool_size,
                connect_timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
                generation_refresh=self.generation_refresh,
                circuit=policy,
            )
            for server in nodes
        ]
        self.circuits = tuple(node.circuit for node in self._nodes)
        self._ring = Ring(self._nodes, [node.name for node in self._nodes])
        self._single: Optional[Node] = self._nodes[0] if len(self._nodes) == 1 else None
        self._held: dict[str, Hold] = {}
        self.max_item_bytes = max_item_bytes
        self._checked: set[tuple[Any, Rate]] = set()
        self._states: Lanes[Hit, Decision] = Lanes(self.circuits)
        self._windows: Lanes[Hit, Counted] = Lanes(self.circuits)
        self._full: dict[bytes, int] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._url()!r}, namespace={self.namespace!r})"

    def _url(self) -> str:
        """The URL of the nodes, as errors show it."""
        return "memcached://" + ",".join(node.name for node in self._nodes)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemcachedBackend:
        """`memcached://host:11211` or `memcached://h1:11211,h2:11211`, with settings in the
        query (`?namespace=app&command_timeout=0.25`: see `url_options`) or as keywords.

        Args:
            url: The URL of the node or nodes.
            **options: The constructor's other keyword arguments.

        Returns:
            A new backend.

        Raises:
            ConfigurationError: When the query sets something `url_options` does not list,
                sets a value that does not convert, or sets what a keyword sets too.
        """
        url, options = query.split_url_options(url, cls.__name__, cls.url_options, options)
        return cls(url, **options)

    # -- lifecycle ------------------------------------------------------------------------

    async def _open(self) -> None:
        """Ask every node its version (one connection each, in this event loop; the others
        open on demand): a node where another server answers is a bad setting
        (`ConfigurationError`); no node answering, an outage (`BackendConnectionError`, the
        node's own when there is one); some nodes down, their circuits open (each says so
        once, and probes its node until it answers: their keys fail alone, at once)."""
        for node in self._nodes:
            node.reopen()
        url = self._url()
        answers = await asyncio.gather(
            *(node.greet(url) for node in self._nodes), return_exceptions=True
        )
        failures = [answer for answer in answers if answer is not None]
        for failure in failures:
            if isinstance(failure, ConfigurationError) or not isinstance(failure, Exception):
                raise failure
        if len(failures) == len(self._nodes):
            if len(failures) == 1:
                raise failures[0]
            raise BackendConnectionError(
                f"could not initialise {self!r}: no node answers ("
                + "; ".join(str(failure) for failure in failures)
                + ")"
            ) from failures[0]
        for node, answer in zip(self._nodes, answers):
            if answer is not None:
                node.circuit.trip(answer)
        self.connection = self._nodes

    async def _close(self) -> None:
        self.connection = None
        await asyncio.gather(*(node.close() for node in self._nodes))

    async def _ping(self) -> bool:
        answers = await asyncio.gather(
            *(node.ping() for node in self._nodes), return_exceptions=True
        )
        return any(answer is True for answer in answers)

    # -- refunds ----------------------------------------------------------------------------

    async def refund_all(self, items: Sequence[Item]) -> None:
        """`MemcachedSteps.refund_all`, store operations of their own per item (a read, then a
        `cas`), run to their end once asked for even if the caller is cancelled meanwhile
        (`finished`), as `evaluate_all` runs its items once begun: a refund asked for lands
        on every item, never on some only, nor (as on Redis and SQLite) on none. (Unlike
        `evaluate_all`, not even a caller cancelled before the first command stops it: the
        throttle counts a refund it asked the store for as given back.)"""
        await finished(super().refund_all(items), "memcached refund_all")

    # -- where a key lives ------------------------------------------------------------------

    async def _locate(self, key: str) -> tuple[Node, bytes]:
        if not self.initialized:
            await self.ensure()
        if type(key) is not str:
            key = str(key)
        node = self._ring.pick(key)
        keys = node.keys
        if keys is None or monotonic() >= node.fresh_until:
            keys = await node.current_keys()
        return node, keys(key)
