"""A throttle's settings: checked when it is built, and changed while it serves (`update_*`).

Mixed into `Throttle`. Every setting is checked here, once, by the constructor and by its
`update_*` method alike. An `update_*` call takes effect at once and returns an awaitable, so
both `throttle.update_rate("5/s")` and traffik 1.2's `await throttle.update_rate("5/s")` work.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from traffik.backends.base import ThrottleBackend
from traffik.call_shapes import check_called_as
from traffik.exceptions import ConfigurationError
from traffik.headers import Headers, header_setting
from traffik.identity import _watch_prefix
from traffik.on_error import check_on_error
from traffik.rates import MAX_PERIOD_MS, UNLIMITED, Rate, RatesLike, parse_rates
from traffik.response_headers import HeaderPlan
from traffik.rules import RuleGate, sort_rules
from traffik.strategies import DEFAULT_STRATEGY
from traffik.strategies.steps import WHAT_GIVES_BACK, gives_back, in_place_kind

if TYPE_CHECKING:
    from traffik.registry import ThrottleRegistry
    from traffik.rules import Bypass, Rule

__all__ = ["ThrottleSettings", "Updated", "check_context", "check_cost", "check_flag"]


def check_cost(cost: Any, owner: str) -> int:
    """`cost` if it is a whole number >= 0."""
    if isinstance(cost, bool) or not isinstance(cost, int):
        raise ConfigurationError(f"{owner}: cost={cost!r} must be a whole number >= 0")
    if cost < 0:
        raise ConfigurationError(f"{owner}: cost={cost!r} is negative; use 0 (free) or more")
    return cost


def check_flag(value: Any, name: str, owner: str) -> bool:
    """`value` as a bool, for a setting that is on or off: True or False (1 and 0 too). A
    string is refused: `"false"` (read from an environment variable, say) would be true."""
    if isinstance(value, bool):
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    raise ConfigurationError(f"{owner}: {name}={value!r} must be True or False")


def check_context(context: Any, owner: str) -> dict[str, Any]:
    """A copy of `context` if it is a mapping; an empty dict for None."""
    if context is None:
        return {}
    if not isinstance(context, Mapping):
        raise ConfigurationError(
            f"{owner}: context={context!r} must be a mapping of names to values "
            "(a dict such as {'tier': 'free'}), or None"
        )
    return dict(context)


class Updated:
    """What `update_*` returns: the change is made already; awaiting it does nothing more."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield

    def __repr__(self) -> str:
        return "<updated>"


_UPDATED = Updated()

_KEEPING_KEYS: weakref.WeakSet[Any] = weakref.WeakSet()
"""The throttles that remember keys per peer: a key holds the peer's part, which a change of
the IPv6 prefix (`traffik.identity.set_ipv6_prefix`) changes, so they forget them then."""


def _forget_every_key() -> None:
    for throttle in list(_KEEPING_KEYS):
        throttle._forget_keys()


_watch_prefix(_forget_every_key)


class ThrottleSettings:
    """The checked settings of `Throttle` and their `update_*` methods."""

    uid: str
    strategy: Any
    _strategy_decide: Optional[Callable[..., Any]]
    cost: int
    _cost_fn: Optional[Callable[..., Any]]
    _rate: Rate
    _rates: tuple[Rate, ...]
    _rate_fn: Optional[Callable[..., Any]]
    _static: bool
    headers: Optional[Headers]
    _plan: Optional[HeaderPlan]
    identifier: Optional[Callable[..., Any]]
    handle_throttled: Optional[Callable[..., Any]]
    on_error: Any
    min_wait_period: Optional[float]
    dynamic_backend: bool
    registry: ThrottleRegistry
    dynamic_rules: bool
    _backend: Optional[ThrottleBackend]
    _hit_backend: Optional[ThrottleBackend]
    _own_rules: tuple[Rule | Bypass, ...]
    _gate: Optional[RuleGate]

    def _owner(self) -> str:
        return f"{type(self).__name__}({self.uid!r})"

    # -- strategy, cost, rate ------------------------------------------------------------

    def _set_strategy(self, strategy: Any) -> None:
        strategy = DEFAULT_STRATEGY if strategy is None else strategy
        if isinstance(strategy, type):
            name = strategy.__name__
            raise ConfigurationError(
                f"{self._owner()}: strategy={name} is a class; pass an instance: {name}()"
            )
        if not callable(strategy):
            raise ConfigurationError(
                f"{self._owner()}: strategy={strategy!r} is not a strategy; pass one such as "
                "TokenBucket() (from traffik.strategies), or an async callable (key, rate, "
                "backend, cost) returning the wait in milliseconds"
            )
        charge_when = getattr(self, "charge_when", None)  # (None while the throttle is built)
        if charge_when is not None:
            self._check_settles(charge_when, strategy)
        self.strategy = strategy
        self._strategy_decide = getattr(strategy, "decide", None)
        self._settle_static()

    def _check_settles(self, charge_when: Callable[..., Any], strategy: Any) -> None:
        """Refuse `charge_when` with a strategy that cannot give a request's units back
        (`gives_back`): settling an outcome that does not count gives them back."""
        if not gives_back(strategy):
            raise ConfigurationError(
                f"{self._owner()}: charge_when={charge_when!r} gives back the units of a "
                f"request whose outcome does not count, but strategy={strategy!r} cannot give "
                f"units back: {WHAT_GIVES_BACK}"
            )

    def _set_cost(self, cost: Union[int, Callable[..., Any]]) -> None:
        if callable(cost):
            check_called_as(cost, "cost", self._owner())
            self.cost, self._cost_fn = 1, cost
        else:
            self.cost, self._cost_fn = check_cost(cost, self._owner()), None
        self._settle_static()

    def _settle_static(self) -> None:
        """Whether a hit needs nothing resolved per connection: fixed rates and cost, no
        identifier of its own (the backend's is checked per hit). The hot path reads it."""
        rates = getattr(self, "_rates", None)
        self._static = (
            rates is not None
            and not rates[0].unlimited
            and self._rate_fn is None
            and self._cost_fn is None
            and self.cost > 0
            and getattr(self, "identifier", True) is None
            and not getattr(self, "_own_identity", False)  # (a subclass's identity or key hooks)
            and not getattr(self, "_own_keys", False)
        )
        # How a backend can run the strategy in place (`ThrottleBackend.decider`,
        # `decider_all` for several rates), whoever the clients are: the deciders for the
        # throttle's own rates and cost are kept in `_decider`, those for rates or a cost
        # given per connection in `_deciders_kept`. The keys of a static throttle are
        # remembered per peer and route besides.
        self._in_place = (
            in_place_kind(self.strategy)
            if rates is not None and (self._rate_fn is not None or not rates[0].unlimited)
            else 0
        )
        self._fixed = rates is not None and self._rate_fn is None and self._cost_fn is None
        # The backend in-place decisions were last made on, and its `decider` for them (or
        # its `waited_decider`).
        self._decider: tuple[
            Optional[ThrottleBackend],
            Optional[Callable[[str], Any]],
            Optional[Callable[[str], Awaitable[Any]]],
        ]
        self._decider = (None, None, None)
        self._deciders_kept: dict[Any, Any] = {}
        self._forget_keys()

    def _forget_keys(self) -> None:
        """Forget the keys remembered per peer and route (`Throttle._prepared`), and the
        routes' prepared key parts (also when the IPv6 prefix changes: `_KEEPING_KEYS`)."""
        _KEEPING_KEYS.add(self)
        self._keys: dict[tuple[Any, ...], tuple[Any, tuple[tuple[Rate, ...], int, str]]] = {}
        self._ends: dict[tuple[Any, ...], tuple[Any, Optional[str], str]] = {}

    def _set_rate(self, rate: Union[RatesLike, Callable[..., Any]]) -> None:
        rate_fn: Optional[Callable[..., Any]] = None
        if isinstance(rate, (str, Rate, list, tuple)):
            rates = parse_rates(rate)
        elif callable(rate):
            check_called_as(rate, "rate", self._owner())
            rates, rate_fn = (UNLIMITED,), rate
        else:
            raise ConfigurationError(
                f"{self._owner()}: rate={rate!r}; use a string like '100/min' or "
                "'10/s;1000/day', a Rate, a list of them, or a callable"
            )
        if rate_fn is None:
            self.check_rates(rates, None if self._cost_fn is not None else self.cost)
        self._rates, self._rate, self._rate_fn = rates, rates[0], rate_fn
        self._checked_rates: set[tuple[Rate, ...]] = set()
        self._settle_static()
        self._plan_headers()
        self._validate()

    def check_rates(
        self, rates: tuple[Rate, ...], cost: Optional[int], owner: Optional[str] = None
    ) -> None:
        """Refuse rates this throttle's strategy cannot decide (`ConfigurationError`): several
        rates with a strategy that is not built in, a rate too large to decide exactly, or one
        that can never admit `cost` (None: the cost is given per connection). `owner` names
        who gave the cost in the message (a `MiddlewareThrottle`); None for this throttle."""
        owner, strategy = owner or self._owner(), self.strategy
        if len(rates) > 1 and not gives_back(strategy):
            raise ConfigurationError(
                f"{owner}: several rates ({'; '.join(map(str, rates))}) are decided as one "
                f"step, which needs a built-in strategy; {strategy!r} decides one rate only"
            )
        capacity = getattr(strategy, "capacity", None)
        check_scale = getattr(strategy, "check_scale", None)
        for parsed in rates:
            if parsed.unlimited:
                continue
            if capacity is not None and cost is not None and cost > capacity(parsed):
                raise ConfigurationError(
                    f"{owner}: cost={cost} exceeds what rate {str(parsed)!r} with "
                    f"{type(strategy).__name__} can ever admit ({capacity(parsed):g}); "
                    "raise the rate's limit or lower the cost"
                )
            if check_scale is not None:
                check_scale(parsed)

    @property
    def dynamic_cost(self) -> bool:
        """Whether a callable gives the cost per connection (`cost` is then 1)."""
        return self._cost_fn is not None

    @property
    def rate(self) -> Any:
        """The `Rate` (a tuple of them for several), or the callable that gives it per
        connection."""
        if self._rate_fn is not None:
            return self._rate_fn
        return self._rate if len(self._rates) == 1 else self._rates

    @property
    def rates(self) -> tuple[Rate, ...]:
        """The fixed rates (one `Rate()` when a callable gives them per connection)."""
        return self._rates

    @property
    def static_rate(self) -> Optional[Rate]:
        """The (first) rate when fixed, None when a callable gives it per connection."""
        return None if self._rate_fn is not None else self._rate

    @property
    def static_rates(self) -> Optional[tuple[Rate, ...]]:
        """The rates when they are fixed, None when a callable gives them per connection."""
        return None if self._rate_fn is not None else self._rates

    # -- backend -------------------------------------------------------------------------

    def _set_backend(self, backend: Union[ThrottleBackend, str, None]) -> None:
        owner = self._owner()
        if self.dynamic_backend and backend is not None:
            raise ConfigurationError(
                f"{owner}: dynamic_backend=True resolves the backend per hit; do not pass backend="
            )
        if isinstance(backend, str):
            from traffik.backends import from_url

            backend = from_url(backend)
        if backend is not None and not isinstance(backend, ThrottleBackend):
            raise ConfigurationError(
                f"{owner}: backend={backend!r} is not a ThrottleBackend or a backend URL"
            )
        self._backend = backend
        # What a hit asks first (`hit`, `traffik.together`): this backend, unless a subclass
        # decides per connection (traffik 1.2's `get_backend` override), which is asked.
        from traffik.connection_inputs import ConnectionInputs  # (it imports this module)

        resolves = getattr(type(self), "get_backend", None) is not ConnectionInputs.get_backend
        self._hit_backend = None if resolves else backend
        self._validate()

    def _validate(self) -> None:
        """Let a fixed backend refuse a static rate its store cannot hold (`validate`)."""
        backend = self._backend
        if backend is not None and self._rate_fn is None:
            for rate in self._rates:
                if not rate.unlimited:
                    backend.validate(self.strategy, rate)

    @property
    def backend(self) -> Optional[ThrottleBackend]:
        """The backend given to this throttle; None: the connection's app or context gives it."""
        return self._backend

    @property
    def is_dynamic(self) -> bool:
        """Whether the backend is resolved per hit from the active context (`dynamic_backend`)."""
        return self.dynamic_backend

    @property
    def use_fixed_backend(self) -> bool:
        return not self.dynamic_backend

    # -- reactions -----------------------------------------------------------------------

    def _set_callable(self, name: str, value: Any) -> None:
        if value is not None:
            check_called_as(value, name, self._owner())
            if name == "charge_when":
                self._check_settles(value, self.strategy)
        setattr(self, name, value)
        if name == "identifier":
            self._settle_static()

    def _set_min_wait_period(self, min_wait_period: Optional[float]) -> None:
        if min_wait_period is not None and (
            isinstance(min_wait_period, bool)
            or not isinstance(min_wait_period, (int, float))
            or not 0 <= min_wait_period <= MAX_PERIOD_MS  # (NaN and infinity fail)
        ):
            raise ConfigurationError(
                f"{self._owner()}: min_wait_period={min_wait_period!r} must be a finite number "
                f"of milliseconds from 0 to {MAX_PERIOD_MS} (MAX_PERIOD_MS: 36500 days, the "
                "longest period of a rate), or None"
            )
        self.min_wait_period = min_wait_period

    def _set_headers(self, headers: Any) -> None:
        self.headers = header_setting(headers, self._owner())
        if hasattr(self, "_rate"):
            self._plan_headers()

    def _plan_for(self, rates: tuple[Rate, ...]) -> HeaderPlan:
        """The header plan of rates a callable gave (remembered for a few distinct rates)."""
        plans = self.__dict__.setdefault("_plans", {})
        plan = plans.get(rates)
        if plan is None:
            if len(plans) >= 64:
                plans.clear()
            plan = plans[rates] = HeaderPlan(self.uid, rates, self.headers)  # type: ignore[arg-type]
        return plan

    def _plan_headers(self) -> None:
        """Encode the headers for a fixed rate once; a rate callable's are encoded per hit."""
        self.__dict__.pop("_plans", None)
        static = self._rate_fn is None and not self._rate.unlimited and self.headers is not None
        self._plan = HeaderPlan(self.uid, self._rates, self.headers) if static else None  # type: ignore[arg-type]

    # -- rules ---------------------------------------------------------------------------

    def refresh_rules(self) -> None:
        """Read this throttle's rules again: its own and the registry's for its uid. The
        registry calls it when rules are added; a throttle with none pays nothing per hit."""
        if self._own_rules or self.dynamic_rules or self.registry.get_rules(self.uid):
            self._gate = RuleGate(self._own_rules, self.registry, self.uid, self.dynamic_rules)
        else:
            self._gate = None

    def _set_rules(self, rules: Any) -> None:
        if rules is not None and (
            not isinstance(rules, Iterable) or isinstance(rules, (str, bytes, Mapping))
        ):
            raise ConfigurationError(
                f"{self._owner()}: rules={rules!r} must be a list of Rule and Bypass objects "
                "(traffik.rules), or None"
            )
        self._own_rules = sort_rules(rules or ())

    def add_rules(self, target_uid: str, /, *rules: Rule | Bypass) -> None:
        """Attach `rules` to the throttle registered as `target_uid` in this throttle's registry."""
        self.registry.add_rules(target_uid, *rules)

    # -- updates -------------------------------------------------------------------------

    def update_rate(self, rate: Union[RatesLike, Callable[..., Any]]) -> Updated:
        """Replace the rate (a string, a `Rate`, or a callable), checked as in the constructor."""
        self._set_rate(rate)
        return _UPDATED

    def update_strategy(self, strategy: Any) -> Updated:
        """Replace the strategy; state kept by the old one is not carried over."""
        previous = self.strategy, self._strategy_decide
        self._set_strategy(strategy)
        try:
            self._set_rate(self.rate)
        except ConfigurationError:
            self.strategy, self._strategy_decide = previous
            self._settle_static()
            raise
        return _UPDATED

    def update_cost(self, cost: Union[int, Callable[..., Any]]) -> Updated:
        previous = self.cost, self._cost_fn
        self._set_cost(cost)
        try:
            self._set_rate(self.rate)
        except ConfigurationError:
            self.cost, self._cost_fn = previous
            self._settle_static()
            raise
        return _UPDATED

    def update_backend(self, backend: Union[ThrottleBackend, str, None]) -> Updated:
        """Use `backend` (an object or a URL); None: the connection's app or context gives it."""
        self._set_backend(backend)
        return _UPDATED

    def update_identifier(self, identifier: Optional[Callable[..., Any]]) -> Updated:
        """Replace the identifier; None: the backend's, else the peer address."""
        self._set_callable("identifier", identifier)
        return _UPDATED

    def update_handle_throttled(self, handler: Optional[Callable[..., Any]]) -> Updated:
        """Replace the throttled handler; None: the backend's, else the default for the kind."""
        self._set_callable("handle_throttled", handler)
        return _UPDATED

    def update_min_wait_period(self, min_wait_period: Optional[float]) -> Updated:
        self._set_min_wait_period(min_wait_period)
        return _UPDATED

    def update_headers(self, headers: Any) -> Updated:
        """Replace the headers (a preset name, a mapping, `Headers`); None: no headers."""
        self._set_headers(headers)
        return _UPDATED

    def update_error_handler(self, on_error: Any) -> Updated:
        """Replace the `on_error` policy or handler; None: the backend's."""
        self.on_error = check_on_error(on_error, self._owner())
        return _UPDATED
