"""Client identity: the peer address, and the one proxy header an operator trusts.

Behind a proxy the socket peer is the proxy, so the client's address has to come from a
header the proxy writes. Only the header the operator names is read (a client can send any
header it likes, and a proxy passes most of them through untouched), and only when the peer
is a trusted proxy. `X-Forwarded-For` and `Forwarded` are chains to which each proxy appends
the address it saw: they are walked right to left, through trusted hops only, and the first
untrusted address is the client. A hop that cannot be parsed ends the walk: the request is
then identified by the nearest trusted hop, never by anything further left, which the client
may have written. Headers are read up to `MAX_HOPS` hops and `MAX_HEADER_BYTES` bytes, so a
huge header costs no more than a normal one. A server on a unix socket gives no peer address:
its proxy is trusted when `trusted_proxies` names `UNIX_SOCKET` (`"unix"`), else every
request there is the anonymous client.

IPv4 clients are counted by address, IPv6 clients by network: an ISP hands each customer a
whole /64 (or more), so a client can draw a fresh address per request from it. The default
prefix is 64 (`set_ipv6_prefix` changes it for the process, `ipv6_prefix=` for one
identifier). IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) and those of the well-known NAT64
prefix (`64:ff9b::1.2.3.4`) count as the IPv4 address they carry; loopback and link-local
addresses count whole, since every host on a link has the same link-local prefix
(`grouped_address`). A zone (`%eth0`) names an interface of the host that wrote it, not a
client: it is dropped, except from a link-local address, where it tells two links apart.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import socket
import struct
from collections.abc import Iterable
from typing import Any, Callable, Optional

from traffik.config import ANONYMOUS_IDENTIFIER
from traffik.exceptions import ConfigurationError
from traffik.keyparts import client_part

__all__ = [
    "ANONYMOUS_IDENTIFIER",
    "DEFAULT_IPV6_PREFIX",
    "MAX_HEADER_BYTES",
    "MAX_HOPS",
    "UNIX_SOCKET",
    "ProxyHeaders",
    "default_identifier",
    "get_ipv6_prefix",
    "get_remote_address",
    "grouped_address",
    "peer_part",
    "remote_address",
    "set_ipv6_prefix",
]


MAX_HOPS = 32
"""At most this many hops of a chain header are read, from the right."""

MAX_HEADER_BYTES = 4096
"""At most this many bytes of a header are read, from the right."""

DEFAULT_IPV6_PREFIX = 64
"""IPv6 clients are counted per /64 unless `set_ipv6_prefix` says otherwise."""


_ipv6_prefix = DEFAULT_IPV6_PREFIX
_PEER_PARTS: dict[str, str] = {}
_PEER_PARTS_MAX = 16384
"""Peer key parts remembered, by host text: at most this many (as many as a throttle
remembers keys, `traffik.throttle_keys.KEY_CACHE_SIZE`), then forgotten."""
_GROUPED: dict[tuple[str, int], str] = {}
_GROUPED_MAX = 16384
"""IPv6 hosts as `grouped_address` counts them, by host text and prefix: at most this many,
then forgotten (parsing and printing an IPv6 address takes several µs)."""
_LONGEST_HOST = 128
"""Longer host texts are grouped on every call, never remembered."""


def _checked_prefix(prefix: Any) -> int:
    if type(prefix) is not int or not 1 <= prefix <= 128:
        raise ConfigurationError(
            f"ipv6_prefix={prefix!r}: give a prefix length, an int from 1 to 128 "
            "(64, the default, counts each /64 as one client; 128 counts every address)"
        )
    return prefix


def set_ipv6_prefix(prefix: int) -> None:
    """Count IPv6 clients per `/prefix` network from now on, in the whole process.

    `set_ipv6_prefix(56)` for an ISP that hands customers a /56; `set_ipv6_prefix(128)` keys
    every address apart. Applies to the default identity and to the identifiers of this
    module that were given no `ipv6_prefix=`. Raises `ConfigurationError` unless `prefix` is
    an int from 1 to 128.

    Args:
        prefix: The prefix length, in bits: an int from 1 to 128.

    Raises:
        ConfigurationError: When `prefix` is not an int from 1 to 128.
    """
    global _ipv6_prefix
    _ipv6_prefix = _checked_prefix(prefix)
    _PEER_PARTS.clear()
    for forget in tuple(_PREFIX_WATCHERS):
        forget()


_PREFIX_WATCHERS: list[Callable[[], None]] = []
"""Called when the prefix changes: what remembers keys made of peer parts forgets them (the
throttles' keys per peer, `traffik.throttle_settings`)."""


def _watch_prefix(forget: Callable[[], None]) -> None:
    """Call `forget` whenever `set_ipv6_prefix` changes the prefix (for what remembers keys
    made of peer parts)."""
    _PREFIX_WATCHERS.append(forget)


def get_ipv6_prefix() -> int:
    """The prefix length IPv6 clients are counted by (`set_ipv6_prefix`; 64 by default).

    Returns:
        The prefix length, in bits.
    """
    return _ipv6_prefix


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
"""The well-known NAT64 prefix (RFC 6052): `64:ff9b::203.0.113.7` is the IPv4 client
203.0.113.7, as an IPv6-only server behind a NAT64 or SIIT-DC gateway sees it."""


_MAPPED_HEAD = 0xFFFF
"""`::ffff:0:0/96` (IPv4-mapped addresses), the 96 bits in front of the IPv4 address."""
_NAT64_HEAD = int(_NAT64.network_address) >> 32
_LINK_LOCAL_HEAD = 0xFE80 >> 6
"""`fe80::/10`, its 10 bits."""
_fields = struct.Struct(">8H").unpack


def _ipv6_text(n: int) -> str:
    """The IPv6 address `n` as RFC 5952 writes it (`str(ipaddress.IPv6Address(n))` for
    every address that is not IPv4-mapped): lower-case hexadecimal fields without leading
    zeros, the longest run of two or more zero fields (the first of the longest) as `::`."""
    fields = _fields(n.to_bytes(16, "big"))
    start = length = 0
    run_start = run = 0
    for index, field in enumerate(fields):
        if field:
            run = 0
            continue
        if not run:
            run_start = index
        run += 1
        if run > length:
            start, length = run_start, run
    text = "%x:%x:%x:%x:%x:%x:%x:%x" % fields  # noqa: UP031 (twice as fast as `format`)
    if length < 2:
        return text
    written = text.split(":")
    return ":".join(written[:start]) + "::" + ":".join(written[start + length :])


def _ipv4_text(n: int) -> str:
    """The IPv4 address `n` (its low 32 bits) in dotted decimal."""
    return f"{n >> 24 & 255}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def _read_ipv6(text: str) -> Optional[tuple[int, Optional[ipaddress.IPv6Address]]]:
    """The value of the IPv6 address `text`, as `ipaddress.IPv6Address` reads it, and the
    address itself when `ipaddress` had to read it (a zone, `%eth0`, or a text `inet_pton`
    refuses: `inet_pton` is some fifteen times faster); None when it is no IPv6 address."""
    if "%" not in text:
        try:
            return int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big"), None
        except (OSError, ValueError):
            pass
    try:
        parsed = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    return int(parsed), parsed


def _grouped_ipv6(host: str, prefix: int) -> str:
    """`grouped_address` of a host with a colon in it (`host` when it is no IPv6 address)."""
    read = _read_ipv6(host)
    if read is None:
        return host
    n, parsed = read
    head = n >> 32
    if head in (_MAPPED_HEAD, _NAT64_HEAD):
        # (NAT64: else every IPv4 client of the gateway would be one /64)
        return _ipv4_text(n)
    if n >> 118 == _LINK_LOCAL_HEAD:
        # (with its zone: fe80::1 on two links is two hosts)
        return _ipv6_text(n) if parsed is None else str(parsed)
    if prefix == 128 or n == 1:  # (loopback; without a zone: an interface's name)
        return _ipv6_text(n)
    shift = 128 - prefix
    return f"{_ipv6_text(n >> shift << shift)}/{prefix}"


def grouped_address(host: str, ipv6_prefix: Optional[int] = None) -> str:
    """The text a client at `host` is counted as: an IPv4 address as given; an IPv6 address
    as its network (`2001:db8:1:2::/64`), or as IPv4 when it carries one (`::ffff:1.2.3.4`,
    NAT64's `64:ff9b::1.2.3.4`), or whole for loopback, link-local and `ipv6_prefix=128`
    (without a zone, `%eth0`, except a link-local address's); anything else (a test client's
    `testclient`, a unix socket path) as given. `ipv6_prefix` defaults to `get_ipv6_prefix()`.

    Args:
        host: The client's address, as text.
        ipv6_prefix: The prefix length, in bits (1 to 128), an IPv6 client is counted by;
            None for `get_ipv6_prefix()`.

    Returns:
        The text the client is counted as.

    Raises:
        ConfigurationError: When `ipv6_prefix` is not an int from 1 to 128.
    """
    prefix = _ipv6_prefix if ipv6_prefix is None else _checked_prefix(ipv6_prefix)
    if ":" not in host:
        return host
    seen = (host, prefix)
    grouped = _GROUPED.get(seen)
    if grouped is None:
        grouped = _grouped_ipv6(host, prefix)
        if len(host) <= _LONGEST_HOST:
            if len(_GROUPED) >= _GROUPED_MAX:
                _GROUPED.clear()
            _GROUPED[seen] = grouped
    return grouped


def peer_part(host: str) -> str:
    """The key part of a socket peer: `client_part(grouped_address(host))`, remembered per
    host, so a returning client costs one dict lookup.

    Args:
        host: The socket peer's host, as the server gives it.

    Returns:
        The client's key part.
    """
    part = _PEER_PARTS.get(host)
    if part is None:
        if len(_PEER_PARTS) >= _PEER_PARTS_MAX:
            _PEER_PARTS.clear()
        part = _PEER_PARTS[host] = client_part(grouped_address(host))
    return part


class ProxyHeaders(enum.IntFlag):
    """The proxy header to read when the peer is a trusted proxy: name exactly one."""

    NONE = 0
    """No header: the socket peer is the client."""
    FORWARDED = 1
    """RFC 7239 `Forwarded` (its `for=` parameters), a chain walked right to left."""
    X_FORWARDED_FOR = 2
    """`X-Forwarded-For`, a chain walked right to left."""
    X_REAL_IP = 4
    """`X-Real-IP`, one address (the last, if repeated)."""
    TRUE_CLIENT_IP = 8
    """`True-Client-IP`, one address (the last, if repeated)."""
    CF_CONNECTING_IP = 16
    """`CF-Connecting-IP` (Cloudflare), one address (the last, if repeated)."""
    ALL = FORWARDED | X_FORWARDED_FOR | X_REAL_IP | TRUE_CLIENT_IP | CF_CONNECTING_IP
    """Every header: refused as `proxy_headers` (a client could pick its own address)."""


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


UNIX_SOCKET = "unix"
"""In `trusted_proxies`: a connection with no peer address (a server listening on a unix
socket gives none, and only processes of its host can connect) comes from a trusted proxy."""

_Address = tuple[int, int, str]
"""An address as the proxy walk reads it: its version (4 or 6), its value, and its text as
`ipaddress` prints it (an IPv6 address's zone kept)."""
_Networks = tuple[tuple[int, int, int], ...]
"""Trusted networks: (version, the network's value, its mask) each."""
_Trust = tuple[_Networks, bool]
"""The trusted proxies: their networks, and whether a unix socket is one (`UNIX_SOCKET`)."""


def _proxies(trusted_proxies: Iterable[str], where: str) -> tuple[str, ...]:
    """`trusted_proxies` as texts; a lone string (whose characters would each be a proxy) is
    refused, with the list it was surely meant as."""
    if isinstance(trusted_proxies, (str, bytes)):
        raise ConfigurationError(
            f"{where}: trusted_proxies={trusted_proxies!r} is one string; give a list of "
            f"addresses or networks, e.g. [{trusted_proxies!r}]"
        )
    return tuple(str(p) for p in trusted_proxies)


@functools.lru_cache(maxsize=128)
def _trust(trusted: tuple[str, ...]) -> _Trust:
    networks = []
    for item in trusted:
        if item == UNIX_SOCKET:
            continue
        try:
            network = ipaddress.ip_network(str(item), strict=False)
            networks.append((network.version, int(network.network_address), int(network.netmask)))
        except ValueError as exc:
            raise ConfigurationError(
                f"trusted proxy {item!r} is not an IP address or network; "
                f"write it like '10.0.0.1' or '10.0.0.0/8', or {UNIX_SOCKET!r} for a proxy "
                "reaching the server on a unix socket"
            ) from exc
    return tuple(networks), UNIX_SOCKET in trusted


def _hop_text(text: str) -> Optional[str]:
    """The address's text in a header hop (`1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `"[::1]"`):
    without quotes, brackets or port; None for a bracket never closed."""
    text = text.strip().strip('"')
    if text.startswith("["):
        end = text.find("]")
        return None if end < 0 else text[1:end]
    if text.count(":") == 1:
        return text.split(":", 1)[0]
    return text


def _parse(text: str) -> Optional[_Address]:
    """An address from a header hop (`_hop_text`), or None."""
    found = _hop_text(text)
    if found is None:
        return None
    text = found
    if ":" not in text:  # (IPv4: `inet_pton` reads what `ipaddress.ip_address` reads)
        try:
            n = int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
        except (OSError, ValueError):
            return None
        return 4, n, _ipv4_text(n)
    read = _read_ipv6(text)
    if read is None:
        return None
    n, parsed = read
    if n >> 32 == _MAPPED_HEAD:
        return 4, n & 0xFFFFFFFF, _ipv4_text(n)
    return 6, n, _ipv6_text(n) if parsed is None else str(parsed)


def _trusted(address: _Address, networks: _Networks) -> bool:
    version, value = address[0], address[1]
    return any(v == version and value & mask == base for v, base, mask in networks)


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


def _walk(
    hops: list[str], peer: Optional[_Address], networks: _Networks, forwarded: bool
) -> Optional[str]:
    nearest = peer
    for hop in reversed(hops):
        address = _parse(_for_value(hop) if forwarded else hop)
        if address is None:
            break
        if not _trusted(address, networks):
            return address[2]
        nearest = address
    return None if nearest is None else nearest[2]


def _identified(
    peer_text: Optional[str], value: Optional[str], trust: _Trust, header: Optional[bytes]
) -> Optional[str]:
    """The client's address as text (None: no peer, and no trusted header naming one), from
    the socket peer's host (None or empty: none) and the value of `header` (`_header_tail`:
    None when the request has none, or when `header` is None)."""
    networks, unix = trust
    peer: Optional[_Address] = None
    if peer_text:
        if header is None or not networks:
            return peer_text
        peer = _parse(peer_text)
        if peer is None or not _trusted(peer, networks):
            return peer_text
    elif header is None or not unix:
        return None
    if value is None:
        return None if peer is None else peer[2]
    if header in (b"x-forwarded-for", b"forwarded"):
        hops = value.rsplit(",", MAX_HOPS)[-MAX_HOPS:]
        return _walk(hops, peer, networks, forwarded=header == b"forwarded")
    address = _parse(value.rsplit(",", 1)[-1])
    if address is None:
        address = peer
    return None if address is None else address[2]


def get_remote_address(
    connection: Any,
    *,
    trusted_proxies: Optional[Iterable[str]] = None,
    proxy_headers: ProxyHeaders = ProxyHeaders.X_FORWARDED_FOR,
    ipv6_prefix: Optional[int] = None,
) -> Optional[str]:
    """The client's address: the socket peer, or, when the peer is one of `trusted_proxies`,
    the address the one header `proxy_headers` names gives (see the module docstring), as
    `grouped_address` counts it (an IPv6 client by its /`ipv6_prefix` network). None when the
    server gives no peer.

    Args:
        connection: The request or websocket, or an ASGI scope.
        trusted_proxies: The addresses or networks (`"10.0.0.1"`, `"10.0.0.0/8"`) of the
            proxies whose header is read, and `"unix"` (`UNIX_SOCKET`) for a proxy on a
            unix socket; None or empty to read no header.
        proxy_headers: The one header to read (one `ProxyHeaders` member, or `NONE`).
        ipv6_prefix: The prefix length, in bits (1 to 128), an IPv6 client is counted by;
            None for `get_ipv6_prefix()`.

    Returns:
        The client's address as counted, or None when the server gives no peer.

    Raises:
        ConfigurationError: When `proxy_headers` names no header or several, a trusted
            proxy is not an address or network, or `ipv6_prefix` is invalid.
    """
    scope = connection.scope if hasattr(connection, "scope") else connection
    header = _one_header(proxy_headers)
    prefix = None if ipv6_prefix is None else _checked_prefix(ipv6_prefix)
    trusted = _proxies(trusted_proxies, "get_remote_address") if trusted_proxies else ()
    return _client_address(trusted, header, prefix)(scope)


async def default_identifier(connection: Any) -> str:
    """The peer address as `grouped_address` counts it, or `"__anonymous__"` when the server
    gives none.

    Args:
        connection: The request or websocket.

    Returns:
        The client's identity.
    """
    client = connection.scope.get("client")
    return grouped_address(client[0]) if client else ANONYMOUS_IDENTIFIER


def remote_address(
    trusted_proxies: Iterable[str],
    proxy_headers: ProxyHeaders = ProxyHeaders.X_FORWARDED_FOR,
    *,
    ipv6_prefix: Optional[int] = None,
) -> Callable[[Any], str]:
    """An identifier that reads the one header `proxy_headers` names, from `trusted_proxies` only.

    `HTTPThrottle("api", "100/min", identifier=remote_address(["10.0.0.0/8"]))` behind nginx
    (`proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for`); use
    `ProxyHeaders.FORWARDED` when your proxy writes RFC 7239 `Forwarded` instead, or
    `X_REAL_IP`/`CF_CONNECTING_IP`/`TRUE_CLIENT_IP` for a proxy that sets that one header.
    IPv6 clients count per /`ipv6_prefix` network (`get_ipv6_prefix()`, 64, when not given;
    128 counts every address apart).

    Args:
        trusted_proxies: The addresses or networks (`"10.0.0.1"`, `"10.0.0.0/8"`) of the
            proxies whose header is read, and `"unix"` (`UNIX_SOCKET`) for a proxy on a
            unix socket.
        proxy_headers: The one header to read (one `ProxyHeaders` member, or `NONE`).
        ipv6_prefix: The prefix length, in bits (1 to 128), an IPv6 client is counted by;
            None for `get_ipv6_prefix()`.

    Returns:
        The identifier, `(connection) -> str`: the client's address as counted, or
        `ANONYMOUS_IDENTIFIER` when the server gives no peer.

    Raises:
        ConfigurationError: When `proxy_headers` names no header or several, a trusted
            proxy is not an address or network, or `ipv6_prefix` is invalid.
    """
    address = _ClientAddress(
        _trust(_proxies(trusted_proxies, "remote_address")),
        _one_header(proxy_headers),
        None if ipv6_prefix is None else _checked_prefix(ipv6_prefix),
    )

    def identify(connection: Any) -> str:
        found = address(connection.scope)
        return ANONYMOUS_IDENTIFIER if found is None else found

    return identify


_UNKNOWN: Any = object()


class _ClientAddress:
    """The client's address as `grouped_address` counts it, behind one set of trusted
    proxies and one header (`_identified`), remembered per socket peer and header value: a
    returning client costs the header's lookup and one dict lookup, where parsing its chain
    and printing an IPv6 address take several µs. At most `KNOWN_MAX` are remembered, then
    forgotten at once; a header value longer than `LONGEST_VALUE` is worked out each time."""

    KNOWN_MAX = 4096
    LONGEST_VALUE = 256

    __slots__ = ("_header", "_known", "_prefix", "_trust")

    def __init__(self, trust: _Trust, header: Optional[bytes], prefix: Optional[int]) -> None:
        self._trust = trust
        self._header = header
        self._prefix = prefix
        self._known: dict[tuple[Optional[str], Optional[str], int], Optional[str]] = {}

    def __call__(self, scope: Any) -> Optional[str]:
        """The address of the client of `scope` (None: no peer, and no trusted header)."""
        client = scope.get("client")
        peer = client[0] if client else None
        header = self._header
        value = None if header is None else _header_tail(scope, header)
        prefix = _ipv6_prefix if self._prefix is None else self._prefix
        seen = (peer, value, prefix)
        known = self._known
        found = known.get(seen, _UNKNOWN)
        if found is not _UNKNOWN:
            return found
        address = _identified(peer, value, self._trust, header)
        found = None if address is None else grouped_address(address, prefix)
        if value is None or len(value) <= self.LONGEST_VALUE:
            if len(known) >= self.KNOWN_MAX:
                known.clear()
            known[seen] = found
        return found


@functools.lru_cache(maxsize=128)
def _client_address(
    trusted: tuple[str, ...], header: Optional[bytes], prefix: Optional[int]
) -> _ClientAddress:
    """`get_remote_address`'s `_ClientAddress` for its arguments, made once."""
    return _ClientAddress(_trust(trusted) if trusted else ((), False), header, prefix)
