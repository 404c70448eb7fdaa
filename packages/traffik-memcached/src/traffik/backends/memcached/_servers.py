"""Where the memcached nodes are: `memcached://h1:11211,h2:11211` URLs and `servers=` lists."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Union

from traffik.backends.url_options import redact_url
from traffik.exceptions import ConfigurationError

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Server", "parse_servers", "parse_url"]

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 11211

ServerSpec = Union[str, "tuple[str, int]"]


class Server(NamedTuple):
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _port(text: str, where: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ConfigurationError(
            f"memcached server {where!r}: port {text!r} must be a number from 1 to 65535"
        )
    return port


def _parse_node(text: str, where: str) -> Server:
    text = text.strip()
    if text.startswith("["):  # IPv6: [::1]:11211
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigurationError(f"memcached server {where!r}: write IPv6 hosts as [::1]:11211")
        port = rest[1:]
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ConfigurationError(
            f"memcached server {where!r}: the host is missing; write it as host:11211"
        )
    return Server(host, _port(port, where) if port else DEFAULT_PORT)


def parse_url(url: str) -> list[Server]:
    """The nodes of `memcached://host:port[,host:port...]`; the port defaults to 11211. Errors
    show the URL without its secrets (`redact_url`)."""
    shown = redact_url(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "memcached":
        raise ConfigurationError(
            f"memcached URL {shown!r}: the scheme must be memcached://, e.g. 'memcached://localhost:11211' "
            "or 'memcached://h1:11211,h2:11211' (TLS and auth are not supported)"
        )
    netloc, _, path = rest.partition("/")
    if path or "?" in netloc or "@" in netloc:
        raise ConfigurationError(
            f"memcached URL {shown!r}: only host:port pairs are allowed after memcached://; "
            "pass namespace= and the other settings as keywords, or build it with "
            "from_url(url), which reads MemcachedBackend.url_options from the query"
        )
    if not netloc:
        return [Server(DEFAULT_HOST, DEFAULT_PORT)]
    return _unique([_parse_node(node, shown) for node in netloc.split(",")], shown)


def parse_servers(servers: Iterable[ServerSpec]) -> list[Server]:
    """Nodes from `["h1:11211", ("h2", 11211)]`."""
    if isinstance(servers, (str, bytes)):
        raise ConfigurationError(
            f"servers={servers!r}: pass a list such as ['h1:11211', 'h2:11211'], or use a URL"
        )
    nodes: list[Server] = []
    for spec in servers:
        if isinstance(spec, str):
            nodes.append(_parse_node(spec, spec))
        elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
            nodes.append(Server(spec[0], _port(str(spec[1]), repr(spec))))
        else:
            raise ConfigurationError(
                f"servers: {spec!r} is not a node; use 'host:port' or ('host', port)"
            )
    if not nodes:
        raise ConfigurationError("servers=[]: give at least one memcached node")
    return _unique(nodes, repr(servers))


def _unique(nodes: list[Server], where: str) -> list[Server]:
    seen: set[Server] = set()
    for node in nodes:
        if node in seen:
            raise ConfigurationError(f"memcached servers {where!r}: {node} is listed twice")
        seen.add(node)
    return nodes
