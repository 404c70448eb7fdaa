"""Backends: the protocol, the in-memory store, and discovery of plugins by name or URL."""

from __future__ import annotations

__path__ = __import__("pkgutil").extend_path(__path__, __name__)

import importlib
from typing import TYPE_CHECKING, Any

from traffik.backends._plugins import KNOWN_DISTRIBUTIONS, discover, refresh
from traffik.backends.base import ThrottleBackend
from traffik.backends.context import get_throttle_backend
from traffik.backends.url_options import redact_url
from traffik.exceptions import (
    BackendNotFoundError,
    BackendUnavailableError,
    ConfigurationError,
    InvalidBackendError,
)

if TYPE_CHECKING:  # what `__getattr__` imports (`X as X`: traffik 1.2's names, outside `__all__`)
    from traffik.backends.inmemory import InMemoryBackend
    from traffik.exceptions import BackendConnectionError as BackendConnectionError
    from traffik.exceptions import LockAcquisitionError as LockAcquisitionError
    from traffik.identity import default_identifier as default_identifier
    from traffik.responses import connection_throttled as connection_throttled
    from traffik.typing import ConnectionIdentifier as ConnectionIdentifier
    from traffik.typing import ConnectionThrottledHandler as ConnectionThrottledHandler
    from traffik.typing import HTTPConnectionT as HTTPConnectionT
    from traffik.typing import ThrottleErrorHandler as ThrottleErrorHandler

_LAZY = {
    "InMemoryBackend": "traffik.backends.inmemory",
    # traffik 1.2's names, not in `__all__` (its `traffik.backends` star-imported the modules
    # defining them); `traffik` says what to install when Starlette is missing.
    **dict.fromkeys(("connection_throttled", "default_identifier"), "traffik"),
    **dict.fromkeys(("BackendConnectionError", "LockAcquisitionError"), "traffik.exceptions"),
    **dict.fromkeys(
        (
            "ConnectionIdentifier",
            "ConnectionThrottledHandler",
            "HTTPConnectionT",
            "ThrottleErrorHandler",
        ),
        "traffik.typing",
    ),
}
"""Names imported on first use, to their modules (the in-memory store loads only when used)."""

__all__ = [
    "InMemoryBackend",
    "ThrottleBackend",
    "available",
    "create_backend",
    "from_url",
    "get_backend_class",
    "get_throttle_backend",
    "refresh",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        from traffik import _REMOVED

        if name in _REMOVED:
            raise ImportError(_REMOVED[name], name="traffik.backends")
        raise AttributeError(f"module 'traffik.backends' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def available() -> dict[str, str]:
    """Installed backend names (URL schemes) to their `module:attr` targets."""
    return {name: plugin.target for name, plugin in sorted(discover().items())}


def get_backend_class(name: str) -> type[ThrottleBackend]:
    """The backend class registered under `name` (case-insensitive), e.g. `"redis"`."""
    key = str(name).lower()
    plugin = discover().get(key)
    if plugin is None:
        hint = KNOWN_DISTRIBUTIONS.get(key)
        install = f"; install it with: pip install {hint}" if hint else ""
        raise BackendNotFoundError(
            f"no Traffik backend is registered as {name!r}{install}. Installed: {', '.join(available())}"
        )
    try:
        cls = plugin.load()
    except AttributeError as exc:
        raise InvalidBackendError(
            f"entry point {name!r} = {plugin.target} (from {plugin.distribution}) names something "
            f"that does not exist ({exc}); reinstall or fix that distribution"
        ) from exc
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend {name!r} ({plugin.target}, from {plugin.distribution}) could not be imported: {exc}. "
            f"Reinstall it with its client library: pip install --force-reinstall {plugin.distribution}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, ThrottleBackend)):
        raise InvalidBackendError(
            f"entry point {name!r} = {plugin.target} (from {plugin.distribution}) gives {cls!r}, "
            "not a ThrottleBackend subclass; fix or uninstall that distribution"
        )
    return cls


def from_url(url: str, **options: Any) -> ThrottleBackend:
    """A backend built from a URL whose scheme names it: `memory://`, `redis://host:6379/0`, ..."""
    if not isinstance(url, str) or "://" not in url:
        shown = redact_url(url) if isinstance(url, str) else url  # (never its password)
        raise ConfigurationError(
            f"backend URL {shown!r} has no scheme; write it like 'memory://', 'redis://localhost:6379/0' "
            f"or 'memcached://localhost:11211' (installed: {', '.join(available())})"
        )
    scheme = url.split("://", 1)[0]
    return get_backend_class(scheme).from_url(url, **options)


def create_backend(name: str, /, *args: Any, **kwargs: Any) -> ThrottleBackend:
    """Build the backend registered as `name`, or from a URL when `name` contains `://`."""
    if "://" in name and not args:
        return from_url(name, **kwargs)
    return get_backend_class(name)(*args, **kwargs)
