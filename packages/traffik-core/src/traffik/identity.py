"""Client identity: the peer address, and the one proxy header an operator trusts.

Behind a proxy the socket peer is the proxy, so the client's address has to come from a
header the proxy writes. Only the header the operator names is read (a client can send any
header it likes, and a proxy passes most of them through untouched), and only when the peer
is a trusted proxy. `X-Forwarded-For` and `Forwarded` are chains to which each proxy appends
the address it saw: they are walked right to left, through trusted hops only, and the first
untrusted address is the client. A hop that cannot be parsed ends the walk: the request is
then identified by the nearest trusted hop, never by anything further left, which the client
may have written. Headers are read up to `MAX_HOPS` hops and `MAX_HEADER_BYTES` bytes, so a
huge header costs no more than a normal one.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections.abc import Iterable
from typing import Any, Callable, Optional, Union

from traffik.config import ANONYMOUS_IDENTIFIER
from traffik.exceptions import ConfigurationError

__all__ = [
    "ANONYMOUS_IDENTIFIER",
    "MAX_HEADER_BYTES",
    "MAX_HOPS",
    "ProxyHeaders",
    "default_identifier",
    "get_remote_address",
    "remote_address",
]


MAX_HOPS = 32
"""At most this many hops of a chain header are read, from the right."""

MAX_HEADER_BYTES = 4096
"""At most this many bytes of a header are read, from the right."""

_Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
_Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class ProxyHeaders(enum.IntFlag):
    """The proxy header to read when the peer is a trusted proxy: name exactly one."""

    NONE = 0
    FORWARDED = 1
    X_FORWARDED_FOR = 2
    X_REAL_IP = 4
    TRUE_CLIENT_IP = 8
    CF_CONNECTING_IP = 16
    ALL = FORWARDED | X_FORWARDED_FOR | X_REAL_IP | TRUE_CLIENT_IP | CF_CONNECTING_IP


_HEADER_NAMES = {
    ProxyHeaders.FORWARDED: b"forwarded",
    ProxyHeaders.X_FORWARDED_FOR: b"x-forwarded-for",
    ProxyHeaders.X_REAL_IP: b"x-real-ip",
    ProxyHeaders.TRUE_CLIENT_IP: b"true-client-ip",
    ProxyHeaders.CF_CONNECTING_IP: b"cf-connecting-ip",
}
_CHAINS = ProxyHeaders.FORWARDED | ProxyHeaders.X_FORWARDED_FOR


def _one_header(proxy_headers: Any) -> Optional[bytes]:
    """The lower-case name of the one header `proxy_headers` names (None for `NONE`)."""
    if isinstance(proxy_headers, ProxyHeaders) and (
        proxy_headers == ProxyHeaders.NONE or proxy_headers in _HEADER_NAMES
    ):
        return _HEADER_NAMES.get(proxy_headers)
    raise ConfigurationError(
        f"proxy_headers={proxy_headers!r}: name the one header your proxy sets, e.g. "
        "ProxyHeaders.X_FORWARDED_FOR (nginx, most load balancers) or ProxyHeaders.FORWARDED; "
        "a client can send the others itself, so reading several lets it pick its own address"
    )


@functools.lru_cache(maxsize=128)
def _networks(trusted: tuple[str, ...]) -> tuple[_Network, ...]:
    networks = []
    for item in trusted:
        try:
            networks.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError as exc:
            raise ConfigurationError(
                f"trusted proxy {item!r} is not an IP address or network; "
                "write it like '10.0.0.1' or '10.0.0.0/8'"
            ) from exc
    return tuple(networks)


def _parse(text: str) -> Optional[_Address]:
    """An address from a header hop (`1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `"[::1]"`), or None."""
    text = text.strip().strip('"')
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: _Address, networks: tuple[_Network, ...]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def _header_tail(scope: Any, name: bytes) -> Optional[str]:
    """The header's values joined with commas, cut to the last `MAX_HEADER_BYTES`."""
    values = [value for key, value in scope.get("headers", ()) if key.lower() == name]
    if not values:
        return None
    joined = b",".join(values)[-MAX_HEADER_BYTES:]
    return joined.decode("latin-1")


def _for_value(element: str) -> str:
    """The `for=` parameter of one `Forwarded` element, or "" (which does not parse)."""
    for pair in element.split(";"):
        key, _, value = pair.strip().partition("=")
        if key.lower() == "for":
            return value
    return ""


def _walk(hops: list[str], peer: _Address, networks: tuple[_Network, ...], forwarded: bool) -> str:
    nearest = peer
    for hop in reversed(hops):
        address = _parse(_for_value(hop) if forwarded else hop)
        if address is None:
            break
        if not _trusted(address, networks):
            return str(address)
        nearest = address
    return str(nearest)


def _identify(scope: Any, networks: tuple[_Network, ...], header: Optional[bytes]) -> Optional[str]:
    client = scope.get("client")
    if not client:
        return None
    peer_text = client[0]
    if header is None or not networks:
        return peer_text
    peer = _parse(peer_text)
    if peer is None or not _trusted(peer, networks):
        return peer_text
    value = _header_tail(scope, header)
    if value is None:
        return str(peer)
    if header in (b"x-forwarded-for", b"forwarded"):
        hops = value.rsplit(",", MAX_HOPS)[-MAX_HOPS:]
        return _walk(hops, peer, networks, forwarded=header == b"forwarded")
    address = _parse(value.rsplit(",", 1)[-1])
    return str(peer if address is None else address)


def get_remote_address(
    connection: Any,
    *,
    trusted_proxies: Optional[Iterable[str]] = None,
    proxy_headers: ProxyHeaders = ProxyHeaders.X_FORWARDED_FOR,
) -> Optional[str]:
    """The client's address: the socket peer, or, when the peer is one of `trusted_proxies`,
    the address the one header `proxy_headers` names gives (see the module docstring).
    None when the server gives no peer."""
    scope = connection.scope if hasattr(connection, "scope") else connection
    header = _one_header(proxy_headers)
    networks = _networks(tuple(str(p) for p in trusted_proxies)) if trusted_proxies else ()
    return _identify(scope, networks, header)


async def default_identifier(connection: Any) -> str:
    """The peer address, or `"__anonymous__"` when the server gives none."""
    client = connection.scope.get("client")
    return client[0] if client else ANONYMOUS_IDENTIFIER


def remote_address(
    trusted_proxies: Iterable[str],
    proxy_headers: ProxyHeaders = ProxyHeaders.X_FORWARDED_FOR,
) -> Callable[[Any], str]:
    """An identifier that reads the one header `proxy_headers` names, from `trusted_proxies` only.

    `HTTPThrottle("api", "100/min", identifier=remote_address(["10.0.0.0/8"]))` behind nginx
    (`proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for`); use
    `ProxyHeaders.FORWARDED` when your proxy writes RFC 7239 `Forwarded` instead, or
    `X_REAL_IP`/`CF_CONNECTING_IP`/`TRUE_CLIENT_IP` for a proxy that sets that one header.
    """
    networks = _networks(tuple(str(p) for p in trusted_proxies))
    header = _one_header(proxy_headers)

    def identify(connection: Any) -> str:
        return _identify(connection.scope, networks, header) or ANONYMOUS_IDENTIFIER

    return identify
