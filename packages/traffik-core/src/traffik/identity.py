"""Client identity: the peer address, and proxy headers believed only from trusted proxies."""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections.abc import Iterable
from typing import Any, Callable, Union

from traffik.exceptions import ConfigurationError

__all__ = [
    "ANONYMOUS_IDENTIFIER",
    "ProxyHeaders",
    "default_identifier",
    "get_remote_address",
    "remote_address",
]

ANONYMOUS_IDENTIFIER = "__anonymous__"

_Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class ProxyHeaders(enum.IntFlag):
    """Which proxy headers to read when the peer is a trusted proxy."""

    NONE = 0
    FORWARDED = 1
    X_FORWARDED_FOR = 2
    X_REAL_IP = 4
    TRUE_CLIENT_IP = 8
    CF_CONNECTING_IP = 16
    ALL = FORWARDED | X_FORWARDED_FOR | X_REAL_IP | TRUE_CLIENT_IP | CF_CONNECTING_IP


_SINGLE_VALUE_HEADERS = (
    (ProxyHeaders.CF_CONNECTING_IP, b"cf-connecting-ip"),
    (ProxyHeaders.TRUE_CLIENT_IP, b"true-client-ip"),
    (ProxyHeaders.X_REAL_IP, b"x-real-ip"),
)


@functools.lru_cache(maxsize=128)
def _networks(trusted: tuple[str, ...]) -> tuple[_Network, ...]:
    networks = []
    for item in trusted:
        try:
            networks.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError as exc:
            raise ConfigurationError(
                f"trusted proxy {item!r} is not an IP address or network; write it like '10.0.0.1' or '10.0.0.0/8'"
            ) from exc
    return tuple(networks)


def _ip(text: str) -> str | None:
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _trusted(address: str | None, networks: tuple[_Network, ...]) -> bool:
    if address is None:
        return False
    ip = ipaddress.ip_address(address)
    return any(ip.version == net.version and ip in net for net in networks)


def _header(scope: Any, name: bytes) -> list[str]:
    return [
        value.decode("latin-1") for key, value in scope.get("headers", ()) if key.lower() == name
    ]


def _forwarded_for(values: list[str]) -> list[str]:
    found = []
    for value in values:
        for element in value.split(","):
            for pair in element.split(";"):
                key, _, val = pair.strip().partition("=")
                if key.lower() == "for":
                    found.append(val)
    return found


def get_remote_address(
    connection: Any,
    *,
    trusted_proxies: Iterable[str] | None = None,
    proxy_headers: ProxyHeaders = ProxyHeaders.X_FORWARDED_FOR | ProxyHeaders.FORWARDED,
) -> str | None:
    """The client's address: the socket peer, or, when the peer is a trusted proxy, the
    nearest untrusted address the proxy headers name (walking right to left, so a client
    cannot spoof its way into another bucket by prepending addresses)."""
    scope = connection.scope if hasattr(connection, "scope") else connection
    client = scope.get("client")
    peer = client[0] if client else None
    if not trusted_proxies or peer is None:
        return peer
    networks = _networks(tuple(trusted_proxies))
    peer_ip = _ip(peer)
    if not _trusted(peer_ip, networks):
        return peer
    chains: list[list[str]] = []
    if proxy_headers & ProxyHeaders.FORWARDED:
        chains.append(_forwarded_for(_header(scope, b"forwarded")))
    if proxy_headers & ProxyHeaders.X_FORWARDED_FOR:
        chains.append(
            [part for value in _header(scope, b"x-forwarded-for") for part in value.split(",")]
        )
    for chain in chains:
        for hop in reversed(chain):
            ip = _ip(hop)
            if ip is not None and not _trusted(ip, networks):
                return ip
    for flag, name in _SINGLE_VALUE_HEADERS:
        if proxy_headers & flag:
            for value in _header(scope, name):
                ip = _ip(value)
                if ip is not None:
                    return ip
    return peer


async def default_identifier(connection: Any) -> str:
    """The peer address, or `"__anonymous__"` when the server gives none."""
    client = connection.scope.get("client")
    return client[0] if client else ANONYMOUS_IDENTIFIER


def remote_address(
    trusted_proxies: Iterable[str],
    proxy_headers: ProxyHeaders = ProxyHeaders.X_FORWARDED_FOR | ProxyHeaders.FORWARDED,
) -> Callable[[Any], str]:
    """An identifier that believes proxy headers from `trusted_proxies` only.

    `HTTPThrottle("api", "100/min", identifier=remote_address(["10.0.0.0/8"]))`
    """
    trusted = tuple(str(p) for p in trusted_proxies)
    _networks(trusted)

    def identify(connection: Any) -> str:
        address = get_remote_address(
            connection, trusted_proxies=trusted, proxy_headers=proxy_headers
        )
        return address or ANONYMOUS_IDENTIFIER

    return identify
