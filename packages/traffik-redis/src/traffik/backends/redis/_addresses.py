"""What answers at a URL's addresses when the backend could not open: a setting to fix, or None.

Asked only after opening failed (not on a timeout: a silent server tells nothing), so an
outage costs one more connection attempt. A URL naming another service's port (memcached, a
web server: `traffik.backends.services`), or a `redis+sentinel://` URL naming a plain Redis
or a service no Sentinel monitors, is then a bad setting, not an outage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from redis.asyncio import Redis
from redis.exceptions import RedisError
from traffik.backends.services import REDIS, probe

__all__ = ["not_redis", "not_sentinels"]


async def not_redis(host: str, port: int, path: str, timeout: float) -> Optional[str]:
    """What is wrong when the server at `host`:`port` (or the socket `path`) is not Redis: what
    answers there instead; None when it is Redis, or nothing recognisable answers."""
    found = await probe(host, port, timeout, path=path)
    if found is None or found == REDIS:
        return None
    return (
        f"{found} answers there, not Redis; point the URL at a Redis server's host and port "
        "(6379 by default)"
    )


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


async def not_sentinels(
    nodes: Sequence[tuple[str, int]], service: str, timeout: float
) -> Optional[str]:
    """What is wrong when the nodes of a `redis+sentinel://` URL answer `ROLE` but cannot serve
    `service`: a node that is a plain Redis (or a cluster node), or Sentinels none of which
    monitors `service`. None when one does, or none answers (an outage)."""
    monitored: list[str] = []
    sentinels = 0
    for host, port in nodes:
        client = Redis(host=host, port=port, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            role = await client.execute_command("ROLE")
        except (RedisError, OSError):
            continue  # down, or refusing us: the outage it looks like
        finally:
            await client.aclose()
        kind = _text(role[0]) if role else "unknown"
        if kind != "sentinel":
            return (
                f"{host}:{port} is a Redis server (its role: {kind}), not a Sentinel; use "
                f"redis://{host}:{port}/0 for that server, or name the Sentinels (port 26379 "
                "by default) in the redis+sentinel:// URL"
            )
        sentinels += 1
        names = [_text(name) for name in role[1]]
        if service in names:
            return None
        monitored.extend(names)
    if not sentinels:
        return None
    known = ", ".join(repr(name) for name in sorted(set(monitored))) or "none"
    return (
        f"no Sentinel there monitors a master named {service!r} (they monitor {known}); "
        "write a service they know: redis+sentinel://host:26379/<service>"
    )
