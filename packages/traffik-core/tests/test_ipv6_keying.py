"""IPv6 clients are counted per network (/64 by default), IPv4 clients per address."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.requests import Request

from traffik import HTTPThrottle, InMemoryBackend
from traffik import identity as identity_module
from traffik.exceptions import ConfigurationError
from traffik.identity import (
    DEFAULT_IPV6_PREFIX,
    ProxyHeaders,
    default_identifier,
    get_ipv6_prefix,
    get_remote_address,
    grouped_address,
    peer_part,
    remote_address,
    set_ipv6_prefix,
)
from traffik.keyparts import client_part

PROXY = "2001:db8:ffff::1"
TRUSTED = ["2001:db8:ffff::/48", "10.0.0.0/8"]


@pytest.fixture(autouse=True)
def default_prefix() -> Iterator[None]:
    yield
    set_ipv6_prefix(DEFAULT_IPV6_PREFIX)


def scope_with(peer: str | None, *headers: tuple[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": (peer, 1234) if peer is not None else None,
    }


# -- the key part of a peer ----------------------------------------------------------------


def test_two_addresses_in_one_64_share_a_part() -> None:
    parts = {
        peer_part(host)
        for host in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff:ffff:ffff:ffff")
    }
    assert parts == {client_part("2001:db8:1:2::/64")}
    assert ":" not in parts.pop()


def test_different_64s_differ() -> None:
    hosts = ["2001:db8:1:2::1", "2001:db8:1:3::1", "2001:db8:2:2::1", "2001:db9:1:2::1"]
    assert len({peer_part(host) for host in hosts}) == len(hosts)


def test_spellings_of_one_address_share_a_part() -> None:
    assert peer_part("2001:DB8:0001:0002:0:0:0:1") == peer_part("2001:db8:1:2::1")


@pytest.mark.parametrize("host", ["127.0.0.1", "203.0.113.7", "10.0.0.1", "0.0.0.0"])
def test_ipv4_is_keyed_as_before(host: str) -> None:
    assert peer_part(host) == client_part(host) == host


@pytest.mark.parametrize(
    ("host", "ipv4"), [("::ffff:203.0.113.7", "203.0.113.7"), ("::ffff:cb00:7107", "203.0.113.7")]
)
def test_ipv4_mapped_ipv6_is_keyed_as_ipv4(host: str, ipv4: str) -> None:
    assert peer_part(host) == peer_part(ipv4) == ipv4


@pytest.mark.parametrize(
    "host", ["testclient", "/run/app.sock", "unix:/run/app.sock", "localhost", "", "not::an:ip"]
)
def test_hosts_that_are_not_addresses_are_keyed_as_before(host: str) -> None:
    assert peer_part(host) == client_part(host)
    assert grouped_address(host) == host


@pytest.mark.parametrize("host", ["::1", "fe80::1", "fe80::2%eth0"])
def test_loopback_and_link_local_are_keyed_whole(host: str) -> None:
    # Every host on a link shares fe80::/64, so grouping would merge the whole link.
    assert grouped_address(host) == host
    assert peer_part(host) == client_part(host)


def test_the_peer_cache_is_bounded() -> None:
    for n in range(identity_module._PEER_PARTS_MAX + 10):
        peer_part(f"2001:db8:{n:x}::1")
    assert len(identity_module._PEER_PARTS) <= identity_module._PEER_PARTS_MAX
    assert peer_part("2001:db8:7::5") == client_part("2001:db8:7::/64")


# -- the prefix -----------------------------------------------------------------------------


def test_the_default_prefix_is_64() -> None:
    assert get_ipv6_prefix() == DEFAULT_IPV6_PREFIX == 64
    assert grouped_address("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"


def test_set_ipv6_prefix_applies_to_peers_already_seen() -> None:
    before = peer_part("2001:db8:1:2::1")
    set_ipv6_prefix(56)
    assert get_ipv6_prefix() == 56
    assert peer_part("2001:db8:1:2::1") != before
    assert peer_part("2001:db8:1:2::1") == peer_part("2001:db8:1:ff::1")
    assert peer_part("2001:db8:1:100::1") != peer_part("2001:db8:1:2::1")
    assert grouped_address("2001:db8:1:2::1") == "2001:db8:1::/56"


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["dependency", "middleware"])
async def test_set_ipv6_prefix_applies_to_clients_a_throttle_has_seen(where: str) -> None:
    # A throttle remembers each peer's key: a client it had seen kept its /64 bucket after
    # the change, beside its neighbours' /56 one.
    from traffik import ThrottleMiddleware

    throttle = HTTPThrottle(f"prefix-{where}", rate="2/min", backend=InMemoryBackend())
    app = FastAPI()
    if where == "dependency":
        app.router.dependencies.append(Depends(throttle))
    else:
        app.add_middleware(ThrottleMiddleware, middleware_throttles=[throttle])

    @app.get("/r")
    async def route() -> dict[str, bool]:
        return {"ok": True}

    async def get(peer: str) -> int:
        transport = httpx.ASGITransport(app=app, client=(peer, 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return (await client.get("/r")).status_code

    first, neighbour = "2001:db8:1:1::1", "2001:db8:1:2::1"  # (one /56, two /64s)
    assert await get(first) == 200
    set_ipv6_prefix(56)
    assert [await get(peer) for peer in (first, neighbour, first, neighbour)] == [
        200,
        200,
        429,
        429,
    ]


def test_prefix_128_keeps_full_addresses() -> None:
    assert grouped_address("2001:db8::1", ipv6_prefix=128) == "2001:db8::1"
    set_ipv6_prefix(128)
    assert peer_part("2001:db8::1") != peer_part("2001:db8::2")
    assert peer_part("2001:db8::1") == client_part("2001:db8::1")


@pytest.mark.parametrize(
    ("prefix", "network"),
    [(1, "::/1"), (48, "2001:db8:1::/48"), (63, "2001:db8:1:2::/63"), (127, "2001:db8:1:2::/127")],
)
def test_explicit_prefixes(prefix: int, network: str) -> None:
    assert grouped_address("2001:db8:1:2::1", ipv6_prefix=prefix) == network


@pytest.mark.parametrize("prefix", [0, 129, -64, "64", 64.0, True, None])
def test_a_prefix_must_be_an_int_from_1_to_128(prefix: Any) -> None:
    with pytest.raises(ConfigurationError, match="an int from 1 to 128"):
        set_ipv6_prefix(prefix)
    assert get_ipv6_prefix() == 64
    if prefix is not None:
        with pytest.raises(ConfigurationError, match=r"ipv6_prefix=.*from 1 to 128"):
            remote_address(TRUSTED, ipv6_prefix=prefix)
        with pytest.raises(ConfigurationError, match="from 1 to 128"):
            grouped_address("2001:db8::1", ipv6_prefix=prefix)


# -- the identifiers ------------------------------------------------------------------------


async def _default_identity(peer: str) -> str:
    return await default_identifier(Request(scope_with(peer)))


@pytest.mark.anyio
@pytest.mark.parametrize("peer", ["2001:db8:1:2::1", "203.0.113.7", "::ffff:1.2.3.4", "testclient"])
async def test_default_identifier_keys_as_the_peer_part(peer: str) -> None:
    assert client_part(await _default_identity(peer)) == peer_part(peer)


IPV6_PROXY_CASES = [
    ("an IPv6 client through an IPv6 proxy", PROXY, "2001:db8:1:2::7", "2001:db8:1:2::/64"),
    ("an IPv6 client through an IPv4 proxy", "10.0.0.1", "2001:db8:1:2::7", "2001:db8:1:2::/64"),
    ("a bracketed IPv6 hop with a port", PROXY, "[2001:db8:1:2::7]:443", "2001:db8:1:2::/64"),
    ("an IPv4 client through an IPv6 proxy", PROXY, "203.0.113.7", "203.0.113.7"),
    (
        "trusted IPv6 hops are skipped",
        PROXY,
        "2001:db8:1:2::7, 2001:db8:ffff::9",
        "2001:db8:1:2::/64",
    ),
    (
        "an untrusted IPv6 peer: the header is ignored",
        "2001:db8:5::1",
        "203.0.113.7",
        "2001:db8:5::/64",
    ),
]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [case[1:] for case in IPV6_PROXY_CASES],
    ids=[case[0] for case in IPV6_PROXY_CASES],
)
def test_remote_address_groups_ipv6_behind_proxies(
    peer: str, forwarded: str, expected: str
) -> None:
    scope = scope_with(peer, ("X-Forwarded-For", forwarded))
    assert remote_address(TRUSTED)(Request(scope)) == expected
    assert get_remote_address(scope, trusted_proxies=TRUSTED) == expected


def test_clients_of_one_64_behind_a_proxy_share_an_identity() -> None:
    identify = remote_address(TRUSTED)
    seen = {
        identify(Request(scope_with(PROXY, ("X-Forwarded-For", f"2001:db8:1:2::{n:x}"))))
        for n in range(1, 50)
    }
    assert seen == {"2001:db8:1:2::/64"}


def test_remote_address_ipv6_prefix() -> None:
    scope = scope_with(PROXY, ("Forwarded", 'for="[2001:db8:1:2::7]:80"'))
    exact = remote_address(TRUSTED, ProxyHeaders.FORWARDED, ipv6_prefix=128)
    wide = remote_address(TRUSTED, ProxyHeaders.FORWARDED, ipv6_prefix=48)
    assert exact(Request(scope)) == "2001:db8:1:2::7"
    assert wide(Request(scope)) == "2001:db8:1::/48"
    assert get_remote_address(scope, trusted_proxies=TRUSTED, ipv6_prefix=128) == PROXY
    process_default = remote_address(TRUSTED, ProxyHeaders.FORWARDED)
    set_ipv6_prefix(56)
    assert process_default(Request(scope)) == "2001:db8:1::/56"


def test_the_trusted_proxy_check_uses_full_addresses() -> None:
    # The proxy's /64 is trusted only where the operator trusts it, not because of grouping.
    scope = scope_with("2001:db8:ffff::1", ("X-Forwarded-For", "2001:db8:ffff::2"))
    assert get_remote_address(scope, trusted_proxies=["2001:db8:ffff::1/128"]) == (
        "2001:db8:ffff::/64"
    )
    assert remote_address(["2001:db8:ffff::1/128"], ipv6_prefix=128)(Request(scope)) == (
        "2001:db8:ffff::2"
    )


@pytest.mark.parametrize(
    "spellings",
    [
        ["2001:db8::7", "2001:db8::7%eth0", "2001:db8::7%1", "[2001:db8::7%25eth1]:443"],
        ["::1", "::1%lo"],
        ["::ffff:203.0.113.7", "::ffff:203.0.113.7%x", "203.0.113.7"],
    ],
)
def test_a_zone_id_never_makes_an_address_another_client(spellings: list[str]) -> None:
    # A zone (`%eth0`) names an interface of the host that wrote it, not a client: behind a
    # proxy, and with every address apart (/128), each spelling is one client.
    counted = {
        get_remote_address(
            scope_with(PROXY, ("X-Forwarded-For", spelling)),
            trusted_proxies=TRUSTED,
            ipv6_prefix=128,
        )
        for spelling in spellings
    }
    counted |= {grouped_address(s, ipv6_prefix=128) for s in spellings if "[" not in s}
    assert len(counted) == 1, counted


def test_a_link_local_peer_keeps_its_zone() -> None:
    # fe80::1 on eth0 and fe80::1 on eth1 are two hosts on two links.
    assert grouped_address("fe80::1%eth0") != grouped_address("fe80::1%eth1")
    assert grouped_address("fe80::1%eth0") == "fe80::1%eth0"


def _grouped_by_ipaddress(host: str, prefix: int) -> str:
    """`grouped_address` worked out with `ipaddress` alone: the reference."""
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host)
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    if address in ipaddress.IPv6Network("64:ff9b::/96"):
        return str(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.is_link_local:
        return str(address)
    if prefix == 128 or address.is_loopback:
        return str(ipaddress.IPv6Address(int(address)))
    network = ipaddress.IPv6Network(f"{ipaddress.IPv6Address(int(address))}/{prefix}", strict=False)
    return str(network)


def _hosts(draw: random.Random, count: int) -> Iterator[str]:
    """IPv6 hosts of every kind `grouped_address` tells apart, spelt every way, and texts
    that are not addresses."""
    heads = [0, 0xFFFF, int(ipaddress.IPv6Address("64:ff9b::")) >> 32]
    for _ in range(count):
        fields = [draw.choice([0, 0, 1, 0xFFFF, draw.getrandbits(16)]) for _ in range(8)]
        n = 0
        for field in fields:
            n = n << 16 | field
        kind = draw.randrange(6)
        if kind == 0:
            n = draw.choice(heads) << 32 | draw.getrandbits(32)
        elif kind == 1:
            n = 0xFE80 << 112 | draw.getrandbits(64)
        elif kind == 2:
            n = draw.choice([0, 1])
        address = ipaddress.IPv6Address(n)
        spelling = draw.randrange(5)
        if spelling == 0:
            yield address.exploded
        elif spelling == 1:
            yield address.exploded.upper() + draw.choice(["", "%eth0", "%1"])
        elif spelling == 2 and n >> 32 in heads:
            yield f"{ipaddress.IPv6Address(n >> 32 << 32).compressed[:-3]}{ipaddress.IPv4Address(n & 0xFFFFFFFF)}"
        elif spelling == 3:
            yield address.compressed + ":" + draw.choice(["1", "", ":"])  # (mostly no address)
        else:
            yield ipaddress.IPv6Address(n).compressed


def test_ipv6_hosts_are_grouped_as_ipaddress_groups_them() -> None:
    # `grouped_address` reads and prints addresses itself, faster than `ipaddress`: every
    # host of every kind, under every prefix, is counted as `ipaddress` would count it.
    draw = random.Random(7)
    for host in _hosts(draw, 20_000):
        prefix = draw.randint(1, 128)
        identity_module._GROUPED.clear()
        assert grouped_address(host, prefix) == _grouped_by_ipaddress(host, prefix), (host, prefix)


def _reference_address(hop: str) -> Any:
    """A proxy hop read with `ipaddress` alone (IPv4-mapped as IPv4), or None: the reference."""
    text = identity_module._hop_text(hop)
    if text is None:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _reference_identity(scope: dict[str, Any], trusted: list[str], header: bytes) -> Any:
    """`get_remote_address` worked out with `ipaddress` alone: the reference."""
    networks = [ipaddress.ip_network(t, strict=False) for t in trusted if t != "unix"]

    def trusted_hop(address: Any) -> bool:
        return any(address.version == n.version and address in n for n in networks)

    client = scope.get("client")
    peer = None
    if client and client[0]:
        peer = _reference_address(client[0])
        if peer is None or not trusted_hop(peer):
            return grouped_address(client[0])
    elif "unix" not in trusted:
        return None
    values = [v for k, v in scope["headers"] if k == header]
    if not values:
        return None if peer is None else grouped_address(str(peer))
    value = b",".join(values)[-4096:].decode("latin-1")
    if header in (b"x-forwarded-for", b"forwarded"):
        nearest = peer
        for hop in reversed(value.rsplit(",", 32)[-32:]):
            if header == b"forwarded":
                pairs = [p.strip().partition("=") for p in hop.split(";")]
                hop = next((v for k, _, v in pairs if k.lower() == "for"), "")
            address = _reference_address(hop)
            if address is None:
                break
            if not trusted_hop(address):
                return grouped_address(str(address))
            nearest = address
        return None if nearest is None else grouped_address(str(nearest))
    address = _reference_address(value.rsplit(",", 1)[-1]) or peer
    return None if address is None else grouped_address(str(address))


_HOPS = [
    "203.0.113.7",
    "203.0.113.07",
    "10.0.0.9",
    "10.0.0.9:8080",
    "[2001:db8:ffff::9]:443",
    '"[2001:db8:1:2::7]"',
    "2001:db8:1:2::7",
    "2001:DB8:1:2:0:0:0:7",
    "2001:db8:ffff::5%eth0",
    "fe80::1%eth0",
    "::ffff:203.0.113.9",
    "::ffff:10.0.0.3",
    "64:ff9b::203.0.113.7",
    "::1",
    "2001:db8::a00:1",  # (its low 32 bits spell 10.0.0.1: not an IPv4 proxy)
    "::a00:5",
    "unknown",
    "_hidden",
    "1.2.3",
    "1.2.3.4.5",
    " 198.51.100.2 ",
    "[::1",
    "2001:db8::1::2",
    "",
]


def test_a_proxy_chain_is_read_as_ipaddress_reads_it() -> None:
    # The walk reads addresses with `inet_pton` and integers: every chain of hops, of every
    # spelling, behind every kind of peer, names the client `ipaddress` would name.
    draw = random.Random(11)
    peers = ["10.0.0.1", PROXY, "::ffff:10.0.0.1", "203.0.113.50", "2001:db8:5::1", None]
    trusted_sets = [TRUSTED, ["10.0.0.0/8"], ["2001:db8:ffff::/48", "unix"], ["10.0.0.1/32"]]
    names = {
        ProxyHeaders.X_FORWARDED_FOR: b"x-forwarded-for",
        ProxyHeaders.FORWARDED: b"forwarded",
        ProxyHeaders.X_REAL_IP: b"x-real-ip",
    }
    for _ in range(3000):
        proxy_header = draw.choice(list(names))
        hops = [draw.choice(_HOPS) for _ in range(draw.randint(1, 4))]
        if proxy_header == ProxyHeaders.FORWARDED:
            hops = [f"for={hop};proto=https" if draw.random() < 0.8 else hop for hop in hops]
        peer = draw.choice(peers)
        scope = scope_with(peer, (names[proxy_header].decode(), ", ".join(hops)))
        trusted = draw.choice(trusted_sets)
        expected = _reference_identity(scope, trusted, names[proxy_header])
        found = get_remote_address(scope, trusted_proxies=trusted, proxy_headers=proxy_header)
        assert found == expected, (peer, hops, trusted, proxy_header)


# -- remembered identities ------------------------------------------------------------------

_PEERS = [
    PROXY,
    "2001:db8:ffff::2",
    "10.0.0.1",
    "10.9.9.9",
    "203.0.113.9",
    "2001:db8:5::1",
    "",
    None,
]
_VALUES = [
    None,
    "203.0.113.7",
    "2001:db8:1:2::7",
    "2001:db8:1:3::7, 2001:db8:ffff::9",
    "junk, 203.0.113.8, 10.0.0.2",
    "[2001:db8:1:2::7]:443",
    'for="[2001:db8:1:4::7]:80";proto=https, for=10.0.0.3',
    "for=203.0.113.5",
    "not an address",
    "::ffff:203.0.113.7",
    "64:ff9b::203.0.113.7",
    "fe80::1%eth0",
]


def _scopes(draw: random.Random, count: int) -> list[dict[str, Any]]:
    scopes = []
    for _ in range(count):
        peer, value = draw.choice(_PEERS), draw.choice(_VALUES)
        name = draw.choice(["X-Forwarded-For", "Forwarded", "X-Real-IP"])
        scope = scope_with(peer, *([] if value is None else [(name, value)]))
        if peer == "":
            scope["client"] = None  # (a unix socket's server gives no peer)
        scopes.append(scope)
    return scopes


@pytest.mark.parametrize(
    "header",
    [
        ProxyHeaders.NONE,
        ProxyHeaders.FORWARDED,
        ProxyHeaders.X_FORWARDED_FOR,
        ProxyHeaders.X_REAL_IP,
        ProxyHeaders.CF_CONNECTING_IP,
    ],
    ids=lambda header: header.name,
)
def test_a_returning_client_is_identified_as_it_was_the_first_time(header: ProxyHeaders) -> None:
    # One identifier remembers the clients it met, by peer and header value: every answer
    # it gives, in any order and under any prefix, is what a new identifier (remembering
    # nothing) works out for the same request.
    draw = random.Random(int(header))
    trusted = [*TRUSTED, "unix"]
    identify = remote_address(trusted, header)
    for scope in _scopes(draw, 600):
        if draw.random() < 0.05:
            set_ipv6_prefix(draw.choice([48, 56, 64, 128]))
        request = Request(scope)
        remembered = identify(request)
        identity_module._GROUPED.clear()
        assert remembered == remote_address(trusted, header)(request), scope
        assert get_remote_address(scope, trusted_proxies=trusted, proxy_headers=header) == (
            None if remembered == "__anonymous__" else remembered
        )


def test_set_ipv6_prefix_applies_to_clients_already_remembered() -> None:
    identify = remote_address(TRUSTED)
    request = Request(scope_with(PROXY, ("X-Forwarded-For", "2001:db8:1:2::7")))
    assert identify(request) == "2001:db8:1:2::/64"
    assert grouped_address("2001:db8:1:2::7") == "2001:db8:1:2::/64"
    set_ipv6_prefix(48)
    assert identify(request) == "2001:db8:1::/48"
    assert grouped_address("2001:db8:1:2::7") == "2001:db8:1::/48"
    assert get_remote_address(request, trusted_proxies=TRUSTED) == "2001:db8:1::/48"


def test_what_identities_remember_is_bounded() -> None:
    identify = remote_address(TRUSTED)
    address = identify.__closure__[0].cell_contents  # type: ignore[index]
    for n in range(address.KNOWN_MAX + 10):
        identify(Request(scope_with(PROXY, ("X-Forwarded-For", f"2001:db8:{n:x}::1"))))
    assert 0 < len(address._known) <= address.KNOWN_MAX
    address._known.clear()
    # a long header (a client can prepend any hops it likes) is worked out each time
    padded = ", ".join(["198.51.100.1"] * 40) + ", 2001:db8:1:2::7"
    assert identify(Request(scope_with(PROXY, ("X-Forwarded-For", padded)))) == (
        "2001:db8:1:2::/64"
    )
    assert address._known == {}
    for n in range(identity_module._GROUPED_MAX + 10):
        grouped_address(f"2001:db8:{n:x}::1")
    assert 0 < len(identity_module._GROUPED) <= identity_module._GROUPED_MAX


# -- end to end ------------------------------------------------------------------------------


def _app(throttle: HTTPThrottle) -> FastAPI:
    app = FastAPI()

    @app.get("/items", dependencies=[Depends(throttle)])
    async def items() -> list[int]:
        return []

    return app


async def _status(app: FastAPI, peer: str, headers: dict[str, str] | None = None) -> int:
    transport = httpx.ASGITransport(app=app, client=(peer, 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return (await http.get("/items", headers=headers)).status_code


@pytest.mark.anyio
async def test_peers_in_one_64_share_a_bucket() -> None:
    app = _app(HTTPThrottle("ipv6-e2e", rate="2/min", backend=InMemoryBackend()))
    codes = [
        await _status(app, peer)
        for peer in ("2001:db8::1", "2001:db8::2", "2001:db8::3", "2001:db8:0:1::1")
    ]
    assert codes == [200, 200, 429, 200]


@pytest.mark.anyio
async def test_ipv4_and_mapped_ipv4_peers_share_a_bucket() -> None:
    app = _app(HTTPThrottle("ipv4-e2e", rate="1/min", backend=InMemoryBackend()))
    codes = [await _status(app, peer) for peer in ("203.0.113.7", "::ffff:203.0.113.7", "1.2.3.4")]
    assert codes == [200, 429, 200]


@pytest.mark.anyio
async def test_clients_in_one_64_behind_a_proxy_share_a_bucket() -> None:
    throttle = HTTPThrottle(
        "ipv6-proxy-e2e",
        rate="2/min",
        backend=InMemoryBackend(),
        identifier=remote_address(TRUSTED),
    )
    app = _app(throttle)
    codes = [
        await _status(app, PROXY, {"X-Forwarded-For": client})
        for client in ("2001:db8::1", "2001:db8::2", "2001:db8::3", "2001:db8:0:1::1")
    ]
    assert codes == [200, 200, 429, 200]


@pytest.mark.parametrize(
    "make",
    [
        remote_address,
        lambda proxies: get_remote_address(scope_with("10.0.0.1"), trusted_proxies=proxies),
    ],
)
def test_trusted_proxies_given_as_one_string_is_a_clear_error(make: Any) -> None:
    # Each character was taken as a proxy: "trusted proxy '1' is not an IP address".
    with pytest.raises(
        ConfigurationError,
        match=r"trusted_proxies='10.0.0.1' is one string; give a list.*\['10.0.0.1'\]",
    ):
        make("10.0.0.1")
