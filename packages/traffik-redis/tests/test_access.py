"""What a Redis user needs, what an ACL refusal advises, and the start-up check that proves it.

The advice an ACL refusal gives is enough: a user granted exactly the rules it lists can do
everything the backend does (decide with every strategy, refund, read and write keys, scan,
clear, lock). Each command of it is needed, and the start proves it: a user refused one (or a
server that renamed it away) fails the start with a `ConfigurationError` naming it, instead
of starting and refusing every request. A single-server URL naming a node of a Redis Cluster
fails the start too, saying to use `redis+cluster://`."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from traffik.backends.health import CircuitState
from traffik.backends.redis import RedisBackend
from traffik.exceptions import BackendConnectionError, ConfigurationError
from traffik.rates import Rate
from traffik.strategies import ADVANCED_STRATEGIES, BUILTIN_STRATEGIES, FixedWindow
from traffik.strategies.steps import Item
from traffik.testing.servers import RedisServer, free_port

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

NEEDED = (
    "ping",
    "evalsha",
    "script|load",
    "time",
    "get",
    "getrange",
    "mget",
    "set",
    "psetex",
    "setrange",
    "incrby",
    "decrby",
    "pexpire",
    "pttl",
    "del",
    "unlink",
    "scan",
)
"""Every command the start proves the user may run (`multi`/`exec`, for `multi_set` only, are
advised but not proved: a transaction cannot run in a script)."""
_USERS = itertools.count()
TIMEOUT = 0.5


def _as(url: str, user: str) -> str:
    return url.replace("redis://", f"redis://{user}:pw@", 1)


def _backend(url: str, namespace: str, **options: Any) -> RedisBackend:
    return RedisBackend(
        url, namespace=namespace, connect_timeout=TIMEOUT, command_timeout=TIMEOUT, **options
    )


def _advised(message: str, namespace: str) -> list[str]:
    """The ACL rules an error's advice grants: those after "grant", up to the first aside."""
    assert "grant " in message, message
    rules = message.split("grant ", 1)[1].split(" (", 1)[0].split(";", 1)[0]
    return [
        rule.replace("<namespace>", namespace)
        for rule in re.findall(r"(?:^|\s)([+~][^\s;,()]+)", rules)
    ]


def _refused(message: str) -> list[str]:
    """The commands a start-up error names as refused."""
    assert "needs: " in message, message
    return message.split("needs: ", 1)[1].split(" (", 1)[0].split(", ")


@pytest.fixture
async def user(raw: Redis) -> AsyncIterator[str]:
    """An ACL user (password `pw`) with no permission at all, deleted afterwards."""
    name = f"access-{next(_USERS)}"
    await raw.execute_command("ACL", "SETUSER", name, "reset", "on", ">pw")
    yield name
    await raw.execute_command("ACL", "DELUSER", name)


async def _everything(backend: RedisBackend) -> None:
    """Every kind of operation the backend makes, each checked to have worked."""
    async with backend:
        for cls in (*BUILTIN_STRATEGIES, *ADVANCED_STRATEGIES):
            rates = [Rate.parse("2/min"), Rate.parse("100/day")]
            for hit in (
                [Item(cls(), f"{cls.__name__}:one", rates[0], 1)],
                [Item(cls(), f"{cls.__name__}:{rate}", rate, 1) for rate in rates],
            ):
                assert (await backend.evaluate_all(hit)).allowed, cls
                assert (await backend.evaluate_all(hit, commit=False)).allowed, cls
                await backend.refund_all(hit)
                await backend.evaluate_all(hit)
        counted = await FixedWindow().decide("counter", Rate.parse("1/min"), backend, 1)
        assert counted.allowed
        assert await backend.increment_with_ttl("counted", 2, 60) == 2
        await backend.set("key", "value", expire=60)
        assert await backend.get("key") == "value"
        assert await backend.increment("n", 3) == 3
        assert await backend.decrement("n", 1) == 2
        assert await backend.expire("n", 60)
        assert (await backend.ttl("n") or 0) > 0
        await backend.multi_set({"a": "1", "b": "2"}, expire=60)
        assert await backend.multi_get("a", "b") == ["1", "2"]
        assert await backend.delete("a")
        assert backend.get_key("b") in await backend.scan(backend.get_key(""))
        lock = backend.get_lock("lock", ttl=5)
        assert await lock.acquire()
        await lock.release()
        assert await backend.ready()  # (PING)
        await backend.clear()
        assert await backend.scan(backend.get_key("")) == []


async def test_a_user_granted_what_a_refusal_advises_can_do_everything(
    redis_url: str, raw: Redis, user: str
) -> None:
    namespace = f"ns-{user}"
    refused = _backend(_as(redis_url, user), namespace)
    with pytest.raises(ConfigurationError) as caught:
        await refused.initialize()
    await refused.close()
    rules = _advised(str(caught.value), namespace)
    assert f"~{namespace}:*" in rules, rules
    await raw.execute_command("ACL", "SETUSER", user, "reset", "on", ">pw", *rules)
    await _everything(_backend(_as(redis_url, user), namespace))


@pytest.mark.parametrize("command", NEEDED)
async def test_a_user_refused_one_command_fails_the_start_naming_it(
    redis_url: str, raw: Redis, user: str, command: str
) -> None:
    namespace = f"ns-{user}"
    granted = [f"~{namespace}:*", *(f"+{name}" for name in NEEDED), "+multi", "+exec"]
    await raw.execute_command("ACL", "SETUSER", user, *granted, f"-{command}")
    backend = _backend(_as(redis_url, user), namespace)
    try:
        with pytest.raises(ConfigurationError) as caught:
            async with backend:
                pass
        message = str(caught.value)
        assert _refused(message) == [command.replace("|", " ").upper()], message
        assert f"+{command}" in message and f"~{namespace}:*" in message, message
        assert "unreachable" not in message and "pw@" not in message, message
        assert backend.circuit.state is CircuitState.CLOSED  # it answered: nothing to probe
        assert not await raw.keys(f"{namespace}:*")  # the check left nothing behind
        await raw.execute_command("ACL", "SETUSER", user, f"+{command}")
        async with backend:
            assert (await FixedWindow().decide("c", Rate.parse("1/min"), backend, 1)).allowed
            await backend.clear()
    finally:
        await backend.close()


async def test_a_user_refused_the_backend_keys_fails_the_start(
    redis_url: str, raw: Redis, user: str
) -> None:
    await raw.execute_command("ACL", "SETUSER", user, "~other:*", "+@all")
    backend = _backend(_as(redis_url, user), "mine")
    try:
        with pytest.raises(ConfigurationError) as caught:
            async with backend:
                pass
        message = str(caught.value)
        assert _refused(message) == ["EVALSHA"] and "keys" in message, message
        assert "~mine:*" in message, message
    finally:
        await backend.close()


@pytest.mark.parametrize("command", ["EVALSHA", "GET", "SCRIPT"])
async def test_a_command_renamed_away_fails_the_start_naming_it(
    tmp_path: Path, command: str
) -> None:
    server = RedisServer(tmp_path, free_port(), "--rename-command", command, "").start()
    backend = _backend(server.url, "renamed")
    try:
        with pytest.raises(ConfigurationError) as caught:
            async with backend:
                pass
        message = str(caught.value)
        assert command in _refused(message)[0] and "rename-command" in message, message
        assert "unreachable" not in message, message
        assert backend.circuit.state is CircuitState.CLOSED
    finally:
        await backend.close()
        server.stop()


async def test_a_server_down_at_start_is_still_an_outage_not_a_setting() -> None:
    backend = _backend(f"redis://127.0.0.1:{free_port()}/0", "down")
    try:
        async with backend:  # (starts, the circuit probing)
            assert backend.circuit.state is not CircuitState.CLOSED
        with pytest.raises(BackendConnectionError):
            await backend.initialize()
    finally:
        await backend.close()


# -- a cluster ------------------------------------------------------------------------------


@pytest.fixture
async def cluster_user(nodes: list[Redis]) -> AsyncIterator[str]:
    """An ACL user on every node of the cluster, with no permission at all until a test
    grants some, deleted afterwards."""
    name = f"access-{next(_USERS)}"
    for node in nodes:
        await node.execute_command("ACL", "SETUSER", name, "reset", "on", ">pw")
    yield name
    for node in nodes:
        await node.execute_command("ACL", "DELUSER", name)


def _cluster_as(url: str, user: str) -> str:
    return url.replace("redis+cluster://", f"redis+cluster://{user}:pw@", 1)


async def test_a_cluster_user_granted_what_a_refusal_advises_can_do_everything(
    redis_cluster_url: str, nodes: list[Redis], cluster_user: str
) -> None:
    namespace = f"ns-{cluster_user}"
    url = _cluster_as(redis_cluster_url, cluster_user)
    refused = _backend(url, namespace)
    with pytest.raises(ConfigurationError) as caught:
        await refused.initialize()
    await refused.close()
    rules = _advised(str(caught.value), namespace)
    for node in nodes:
        await node.execute_command("ACL", "SETUSER", cluster_user, "reset", "on", ">pw", *rules)
    await _everything(_backend(url, namespace))


async def test_a_cluster_node_refusing_a_command_fails_the_start_naming_the_node(
    redis_cluster_url: str,
    nodes: list[Redis],
    cluster_addresses: list[tuple[str, int]],
    cluster_user: str,
) -> None:
    """Each node has its own ACL: the check runs on every primary holding slots."""
    namespace = f"ns-{cluster_user}"
    for node in nodes:
        await node.execute_command("ACL", "SETUSER", cluster_user, "~*", "+@all")
    await nodes[1].execute_command("ACL", "SETUSER", cluster_user, "-getrange")
    backend = _backend(_cluster_as(redis_cluster_url, cluster_user), namespace)
    try:
        with pytest.raises(ConfigurationError) as caught:
            async with backend:
                pass
        host, port = cluster_addresses[1]
        message = str(caught.value)
        assert _refused(message) == [f"GETRANGE on {host}:{port}"], message
        assert "+cluster|slots" in message, message
    finally:
        await backend.close()


async def test_a_single_server_url_naming_a_cluster_node_fails_the_start(
    cluster_addresses: list[tuple[str, int]],
) -> None:
    host, port = cluster_addresses[0]
    backend = _backend(f"redis://{host}:{port}/0", "one-node")
    try:
        with pytest.raises(ConfigurationError) as caught:
            async with backend:
                pass
        message = str(caught.value)
        assert "Redis Cluster" in message and "redis+cluster://" in message, message
        assert "unreachable" not in message, message
        assert backend.circuit.state is CircuitState.CLOSED
    finally:
        await backend.close()


# -- the list itself ------------------------------------------------------------------------

_SOURCE = Path(__file__).parents[1] / "src" / "traffik" / "backends" / "redis"
_METHODS = {
    "get": ("get",),
    "set": ("set",),
    "delete": ("del",),
    "incrby": ("incrby",),
    "decrby": ("decrby",),
    "pexpire": ("pexpire",),
    "pttl": ("pttl",),
    "mget": ("mget",),
    "mget_nonatomic": ("mget",),
    "scan": ("scan",),
    "unlink": ("unlink",),
    "ping": ("ping",),
    "evalsha": ("evalsha",),
    "script_load": ("script|load",),
    "pipeline": ("multi", "exec"),  # (`multi_set`'s transaction; the start's is none)
    "initialize": ("cluster|slots", "command"),  # (a cluster client's slot map)
    "execute_command": ("hello",),  # (the start's HELLO, which no ACL refuses)
    "execute": (),
    "aclose": (),
    "get_primaries": (),
    "get_nodes": (),
    "get_node_from_key": (),
}
"""What each redis-py method the backend calls sends (nothing: it reads the client's own map)."""


def test_the_commands_listed_are_those_the_scripts_and_the_backend_send() -> None:
    from traffik.backends.redis import _access

    lua = {
        path.name: {
            name.lower() for name in re.findall(r"redis\.p?call\('(\w+)'", path.read_text())
        }
        for path in (_SOURCE / "lua").glob("*.lua")
    }
    probed = set(re.findall(r"try\('(\w+)'", (_SOURCE / "lua" / "start_check.lua").read_text()))
    assert set().union(*lua.values()) == set(_access.SCRIPT_COMMANDS)
    assert {name.lower() for name in probed} == set(_access.PROBED)
    sent: set[str] = set()
    for path in _SOURCE.glob("*.py"):
        if path.name == "_addresses.py":  # (asks Sentinels, and other services, not the store)
            continue
        for method in re.findall(r"\b(?:client|pipe)\.(\w+)\(", path.read_text()):
            assert method in _METHODS, f"{path.name} calls {method}: add what it sends"
            sent.update(_METHODS[method])
    listed = set(_access.CLIENT_COMMANDS) | set(_access.CLUSTER_COMMANDS) | {"hello"}
    assert sent <= listed, sent - listed
    assert set(_access.CLIENT_COMMANDS) <= sent | set(_access.SCRIPT_COMMANDS)
    assert set(_access.COMMANDS) == set(_access.CLIENT_COMMANDS) | set(_access.SCRIPT_COMMANDS)
    assert set(NEEDED) == set(_access.COMMANDS) - {"multi", "exec"}


def test_the_deployment_page_grants_what_the_advice_does() -> None:
    from traffik.backends.redis import _access

    page = Path(__file__).parents[3] / "docs" / "deployment.md"
    if not page.exists():  # (the package tested on its own)
        pytest.skip("docs/deployment.md is not here")
    line = next(line for line in page.read_text().splitlines() if "ACL SETUSER" in line)
    granted = line.split(">password ", 1)[1]
    assert granted == _access.acl_rules("api", cluster=False, database=0)
    assert " ".join(f"+{c}" for c in _access.CLUSTER_COMMANDS) in page.read_text()
