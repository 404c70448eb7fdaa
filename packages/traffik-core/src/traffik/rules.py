"""Rules: which connections a throttle counts (`Rule`) or lets through (`Bypass`), by path, method and predicate.

A path string keeps traffik 1.2's meaning: a regular expression matched from the start of the
path, where `**` stands for any text and `*` for one segment. So `"/api/"` guards `/api/data`
and `"/health"` also `/healthz`; anchor the end yourself (`"/health$"`), or use `glob()` for a
pattern anchored at both ends. Paths are matched relative to the mount (`route_path`), as
Starlette's router matches them.

| path | matches | does not match |
|---|---|---|
| `"/api/"` | `/api/`, `/api/data`, `/api/v1/users` | `/api`, `/apis` |
| `"/health"` | `/health`, `/healthz`, `/health/deep` | `/status/health` |
| `"/health$"` | `/health` | `/healthz`, `/health/` |
| `"/api/*"` | `/api/users`, `/api/users/1` | `/api/`, `/api` |
| `"/api/**"` | `/api/`, `/api/users/1` | `/api` |
| `re.compile(r"/users/\\d+$")` | `/users/12` | `/users/me`, `/users/12/posts` |
| `glob("/api/*")` | `/api/users` | `/api/users/1`, `/api`, `/api/users.json/x` |
| `glob("/api/**")` | `/api`, `/api/users`, `/api/users/1` | `/apis` |
| `glob("/files/*.txt")` | `/files/a.txt` | `/files/a/b.txt` |
"""

from __future__ import annotations

import inspect
import logging
import re
import warnings
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, Callable, ClassVar, Optional, Union

from traffik._path_globs import glob_regex, plain_path_regex
from traffik.buckets import STANDARD_METHODS, route_path
from traffik.exceptions import ConfigurationError
from traffik.logs import QuietLog

__all__ = [
    "Bypass",
    "BypassThrottleRule",
    "PathPattern",
    "Rule",
    "RuleGate",
    "RuleLike",
    "ThrottleRule",
    "applies",
    "bypass_if",
    "compile_path",
    "glob",
    "pattern_text",
    "sort_rules",
    "throttle_if",
]

logger = logging.getLogger("traffik")
_failures = QuietLog(logger)
"""Rules that raised: one line per rule and error type per 10 s (`applies`)."""

PathPattern = Union[str, "re.Pattern[str]"]


def glob(pattern: str) -> re.Pattern[str]:
    """A path glob as a compiled pattern, anchored at both ends.

    `*` matches within one segment (`/api/*` matches `/api/users`, not `/api/users/1`);
    `**` matches across segments, and `/**` also matches nothing (`/api/**` matches `/api`,
    `/api/users` and `/api/users/1`). Every other character is literal, so `glob("/health")`
    matches `/health` only. A newline is text like any other, and the end may follow one
    final newline, as Starlette's routes match (`/health%0A` is served by `/health`). It
    matches in time proportional to the path's length, whatever its wildcards.
    """
    if not isinstance(pattern, str) or not pattern:
        raise ConfigurationError(f"glob({pattern!r}): give a path glob like '/api/**'")
    compiled = re.compile(glob_regex(pattern), re.DOTALL)
    _globs[compiled] = pattern
    return compiled


_globs: weakref.WeakKeyDictionary[re.Pattern[str], str] = weakref.WeakKeyDictionary()
"""The glob each pattern `glob()` compiled was written as (`pattern_text`)."""


def pattern_text(path: PathPattern) -> str:
    """How a path pattern is written: a glob as given to `glob()` (whatever regular expression
    it compiles to, which a release may change), a compiled pattern's regular expression, a
    string as it is. It names the pattern in a bucket's key, so it must not change."""
    if isinstance(path, re.Pattern):
        return _globs.get(path, path.pattern)
    return path


def compile_path(path: PathPattern) -> re.Pattern[str]:
    """A path string as traffik 1.2 reads it (module docstring), with `.` (and so `**`)
    matching a newline too: a route parameter takes one (`/api/1%0A/edit` is served by
    `/api/{item}/edit`), so a rule must not stop at it. A string with no regex syntax but
    `*` is compiled as a glob is, to match in time proportional to the path's length; any
    other is the user's regular expression, run as written. A compiled pattern as is."""
    if isinstance(path, re.Pattern):
        return path
    if not isinstance(path, str) or not path:
        raise ConfigurationError(
            f"path={path!r} is not a path pattern; use a string like '/api/' (a regular expression "
            "matched from the start of the path), glob('/api/**'), or a compiled pattern"
        )
    text = plain_path_regex(path)
    if text is None:  # a regular expression of the user's, run as given
        text = path.replace("**", "\0").replace("*", "[^/]+").replace("\0", ".*")
    try:
        return re.compile(text, re.DOTALL)
    except re.error as exc:
        raise ConfigurationError(
            f"path={path!r} is not a valid regular expression ({exc}); escape it with re.escape, "
            "or use glob(...) for a glob pattern"
        ) from None


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP token (RFC 9110, section 5.6.2): what a request's method is."""
_METHODS_HELP = (
    f"a method is one HTTP token: {', '.join(sorted(STANDARD_METHODS | {'HEAD'}))}, or one "
    "the app serves itself (a mounted app's PROPFIND); give several as a list, such as "
    "['GET', 'POST']"
)


def _methods(methods: Union[str, Iterable[str], None]) -> Optional[frozenset[str]]:
    """`methods` in upper and lower case. Any HTTP token is a method (a mounted app serves
    methods of its own, and a rule matches the method the client sent); a name that is not
    one (`'GET POST'`, `'GET,POST'`) could never match, so it is refused."""
    if methods is None:
        return None
    given = methods
    if isinstance(methods, str):
        methods = [methods]
    if not isinstance(methods, Iterable) or isinstance(methods, (bytes, Mapping)):
        raise ConfigurationError(
            f"methods={given!r} is not valid; use one HTTP method ('GET'), several "
            "(['GET', 'POST']), or None for every method"
        )
    names = list(methods)
    for name in names:
        if not isinstance(name, str):
            raise ConfigurationError(
                f"methods={given!r}: {name!r} is not an HTTP method name; use strings "
                "such as 'GET' or ['GET', 'POST']"
            )
        if _TOKEN.fullmatch(name) is None:
            raise ConfigurationError(
                f"methods={given!r}: {name!r} is not an HTTP method name and could never "
                f"match; {_METHODS_HELP}"
            )
    if not names:
        raise ConfigurationError("methods=[] matches nothing; pass None to match every method")
    return frozenset(name.upper() for name in names) | frozenset(name.lower() for name in names)


def _takes_context(predicate: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(predicate).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    count = sum(1 for p in parameters if p.kind in positional)
    return count > 1 or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)


def _rebuild(cls: type[_Criteria], path: Any, methods: Any, predicate: Any) -> _Criteria:
    rule = cls.__new__(cls)
    _Criteria.__init__(rule, path=path, methods=methods, predicate=predicate)
    return rule


class _Criteria:
    """Path, methods and predicate; every criterion given must match. Immutable, hashable by value."""

    __slots__ = ("_hash", "_match", "_takes_context", "methods", "path", "pattern", "predicate")

    bypass: ClassVar[bool] = False
    path: Optional[PathPattern]
    """The path as given; `pattern` is it compiled."""
    pattern: Optional[re.Pattern[str]]
    methods: Optional[frozenset[str]]
    """Every method given, in upper and lower case."""
    predicate: Optional[Callable[..., Any]]
    _match: Optional[Callable[[str], Any]]
    _takes_context: bool
    _hash: int

    def __init__(
        self,
        *,
        path: Optional[PathPattern] = None,
        methods: Union[str, Iterable[str], None] = None,
        predicate: Optional[Callable[..., Any]] = None,
    ) -> None:
        if predicate is not None and not callable(predicate):
            raise ConfigurationError(f"predicate={predicate!r} is not callable")
        pattern = None if path is None else compile_path(path)
        found = _methods(methods)
        init = object.__setattr__
        init(self, "path", path)
        init(self, "pattern", pattern)
        init(self, "methods", found)
        init(self, "predicate", predicate)
        init(self, "_match", None if pattern is None else pattern.match)
        init(self, "_takes_context", predicate is not None and _takes_context(predicate))
        init(self, "_hash", hash(self._identity()))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; build a new one")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; build a new one")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.path, self.methods, self.predicate))

    def _identity(self) -> tuple[Any, ...]:
        """What equality and the hash compare: the kind, the pattern's text and flags, the
        methods, and the predicate by identity."""
        pattern = self.pattern
        return (
            type(self).bypass,
            None if pattern is None else (pattern.pattern, pattern.flags),
            self.methods,
            id(self.predicate),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Criteria):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        methods = None if self.methods is None else sorted(m for m in self.methods if m.isupper())
        parts = [("path", self.path), ("methods", methods), ("predicate", self.predicate)]
        shown = ", ".join(f"{name}={value!r}" for name, value in parts if value is not None)
        return f"{type(self).__name__}({shown})"

    @property
    def rank(self) -> int:
        """Evaluation order: bypasses before rules, and rules without a predicate first."""
        return 2 * (self.predicate is not None) + (not self.bypass)

    def matches_scope(self, scope: Mapping[str, Any]) -> bool:
        """Whether the method (HTTP only) and the path match, without the predicate. HEAD
        matches a rule for GET, as Starlette's GET routes serve it."""
        methods = self.methods
        if methods is not None:
            method = scope.get("method")
            if (
                method is not None
                and method not in methods
                and method.upper() not in methods
                and (method.upper() != "HEAD" or "GET" not in methods)
            ):
                return False
        return self._match is None or self._match(route_path(scope)) is not None

    async def matches(self, connection: Any, context: Optional[Mapping[str, Any]] = None) -> bool:
        """Whether `connection` matches every criterion; the predicate runs last."""
        if not self.matches_scope(connection.scope):
            return False
        predicate = self.predicate
        if predicate is None:
            return True
        result = (
            predicate(connection, context or {}) if self._takes_context else predicate(connection)
        )
        if inspect.isawaitable(result):
            result = await result
        return bool(result)

    async def check(self, connection: Any, *, context: Optional[Mapping[str, Any]] = None) -> bool:
        """True when the throttle applies to `connection`."""
        return await self.matches(connection, context) is not self.bypass

    __call__ = check


class Rule(_Criteria):
    """The throttle applies only to connections matching every criterion given.

    `path`: a string (module docstring), `glob(...)` or a compiled pattern; `methods`: one
    method or several, in any case, ignored for WebSockets; `predicate`: `(connection)` or
    `(connection, context)`, sync or async, returning a truth value.
    """

    __slots__ = ()


class Bypass(_Criteria):
    """The throttle lets through, uncounted, connections matching every criterion given."""

    __slots__ = ()
    bypass = True


RuleLike = Union[Rule, Bypass]


def throttle_if(
    *,
    path: Optional[PathPattern] = None,
    methods: Union[str, Iterable[str], None] = None,
    predicate: Optional[Callable[..., Any]] = None,
) -> Rule:
    """`Rule(...)`: count only the connections that match."""
    return Rule(path=path, methods=methods, predicate=predicate)


def bypass_if(
    *,
    path: Optional[PathPattern] = None,
    methods: Union[str, Iterable[str], None] = None,
    predicate: Optional[Callable[..., Any]] = None,
) -> Bypass:
    """`Bypass(...)`: let the connections that match through uncounted."""
    return Bypass(path=path, methods=methods, predicate=predicate)


class ThrottleRule(Rule):
    """Deprecated name of `Rule` (traffik 1.2)."""

    __slots__ = ()

    def __init__(self, **criteria: Any) -> None:
        warnings.warn("ThrottleRule is deprecated; use Rule", DeprecationWarning, stacklevel=2)
        super().__init__(**criteria)


class BypassThrottleRule(Bypass):
    """Deprecated name of `Bypass` (traffik 1.2, where it wrongly gated instead of bypassing)."""

    __slots__ = ()

    def __init__(self, **criteria: Any) -> None:
        warnings.warn(
            "BypassThrottleRule is deprecated; use Bypass", DeprecationWarning, stacklevel=2
        )
        super().__init__(**criteria)


def sort_rules(rules: Iterable[RuleLike]) -> tuple[RuleLike, ...]:
    """`rules` without duplicates, in evaluation order (`rank`; stable otherwise)."""
    rules = list(rules)
    for rule in rules:
        if not isinstance(rule, _Criteria):
            raise ConfigurationError(f"rules: {rule!r} is not a Rule or a Bypass")
    return tuple(sorted(dict.fromkeys(rules), key=lambda rule: rule.rank))


async def applies(
    rules: Iterable[RuleLike], connection: Any, context: Optional[Mapping[str, Any]]
) -> bool:
    """Whether every rule lets the throttle apply. A rule that raises lets it apply: a broken
    predicate never lets a connection escape its throttle. It is logged at ERROR with its
    traceback once per 10 s per rule and error type, with a count of those left out (a
    predicate that fails on what a client sends would otherwise write a line per request)."""
    for rule in rules:
        try:
            result = await rule.check(connection, context=context)
        except Exception as exc:
            _failures.log(
                logging.ERROR,
                (rule, type(exc)),
                "%r failed on %s (%s: %s); the throttle applies",
                rule,
                connection.scope.get("path"),
                type(exc).__name__,
                exc,
                exc_info=True,
            )
            result = True
        if not result:
            return False
    return True


class RuleGate:
    """A throttle's rules: its own, and those its registry holds for its uid.

    The registry calls `refresh` when rules are added for the uid, so they apply from the
    next hit; with `dynamic` the registry is read on every hit.
    """

    __slots__ = ("dynamic", "own", "registry", "rules", "uid")

    def __init__(self, own: tuple[RuleLike, ...], registry: Any, uid: str, dynamic: bool) -> None:
        self.own = own
        self.registry = registry
        self.uid = uid
        self.dynamic = dynamic
        self.rules: tuple[RuleLike, ...] = ()
        self.refresh()

    def refresh(self) -> None:
        self.rules = sort_rules((*self.own, *self.registry.get_rules(self.uid)))

    async def allows(self, connection: Any, context: Optional[Mapping[str, Any]]) -> bool:
        if self.dynamic:
            self.refresh()
        return await applies(self.rules, connection, context)
