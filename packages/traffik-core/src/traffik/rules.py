"""`Rule`: which connections a throttle applies to, by path glob, HTTP method and predicate."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Optional, Union

from traffik.buckets import route_path
from traffik.exceptions import ConfigurationError

__all__ = ["PathPattern", "Rule", "compile_path"]

PathPattern = Union[str, "re.Pattern[str]"]

# `/**` as a whole segment run, `/*` as a whole segment, then `**` and `*` inside a segment.
_GLOB_TOKENS = re.compile(r"/\*\*(?=/|$)|/\*(?=/|$)|\*\*|\*")
_GLOB_REGEX = {"/**": "(?:/.*)?", "/*": "/[^/]+", "**": ".*", "*": "[^/]*"}


def compile_path(path: PathPattern) -> re.Pattern[str]:
    """Compile a path glob into a regular expression anchored at both ends.

    `*` matches within one segment (`/api/*` matches `/api/users`, not `/api/users/1`);
    `**` matches across segments, and `/**` also matches nothing (`/api/**` matches `/api`,
    `/api/users` and `/api/users/1`). Every other character is literal, so `/health` matches
    `/health` only. A compiled `re.Pattern` is returned as is.
    """
    if isinstance(path, re.Pattern):
        return path
    if not isinstance(path, str) or not path:
        raise ConfigurationError(
            f"path={path!r} is not a path pattern; use a glob string like '/api/**' or a compiled regex"
        )
    regex, end = [], 0
    for token in _GLOB_TOKENS.finditer(path):
        regex.append(re.escape(path[end : token.start()]))
        regex.append(_GLOB_REGEX[token.group()])
        end = token.end()
    regex.append(re.escape(path[end:]))
    return re.compile("".join(regex) + r"\Z")


def _methods(methods: Union[str, Iterable[str], None]) -> Optional[frozenset[str]]:
    if methods is None:
        return None
    if isinstance(methods, str):
        methods = [methods]
    found = frozenset(str(method).upper() for method in methods)
    if not found:
        raise ConfigurationError("methods=[] matches nothing; pass None to match every method")
    return found


def _takes_context(predicate: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(predicate).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    count = sum(1 for p in parameters if p.kind in positional)
    return count > 1 or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)


class Rule:
    """Matches connections by path, method and predicate; every criterion given must match.

    `path` is a glob (see `compile_path`) or a compiled regex, tested with `.match`, so
    anchor its end yourself. `methods` is one method or several, ignored for WebSockets,
    which have none. `predicate` is `(connection)` or `(connection, context)`, sync or async,
    returning a truth value.
    """

    __slots__ = ("_match", "_takes_context", "methods", "path", "predicate")

    def __init__(
        self,
        *,
        path: Optional[PathPattern] = None,
        methods: Union[str, Iterable[str], None] = None,
        predicate: Optional[Callable[..., Any]] = None,
    ) -> None:
        if predicate is not None and not callable(predicate):
            raise ConfigurationError(f"predicate={predicate!r} is not callable")
        self.path = path
        self.methods = _methods(methods)
        self.predicate = predicate
        self._takes_context = predicate is not None and _takes_context(predicate)
        self._match = None if path is None else compile_path(path).match

    def __repr__(self) -> str:
        parts = [f"{name}={getattr(self, name)!r}" for name in ("path", "methods", "predicate")]
        return f"{type(self).__name__}({', '.join(p for p in parts if not p.endswith('=None'))})"

    def matches_scope(self, scope: Mapping[str, Any]) -> bool:
        """Whether the path and method match, without the predicate."""
        if (
            self.methods is not None
            and scope.get("type") == "http"
            and scope.get("method", "").upper() not in self.methods
        ):
            return False
        return self._match is None or self._match(route_path(scope)) is not None

    async def matches(self, connection: Any, context: Optional[Mapping[str, Any]] = None) -> bool:
        """Whether `connection` matches every criterion; the predicate runs last."""
        if not self.matches_scope(connection.scope):
            return False
        if self.predicate is None:
            return True
        result = (
            self.predicate(connection, context or {})
            if self._takes_context
            else self.predicate(connection)
        )
        if inspect.isawaitable(result):
            result = await result
        return bool(result)
