"""What the backend needs of a Redis server, and the start-up check that proves the server gives it.

Every command the backend sends is listed here (`COMMANDS`; `test_access.py` compares the list
with the Lua files and the Python that send them), so that an ACL refusal tells the operator
what to grant: `acl_rules`. The start (`check`, where the scripts are loaded) proves the
rest in the same round trips as before on one server (a `PING`, then one pipeline: every
`SCRIPT LOAD`, a `HELLO`, and an `EVALSHA` of `lua/start_check.lua`, which runs each data
command on a key of the backend's namespace and deletes it), one more on a cluster (the check
on every primary that holds slots, side by side). A refusal (the ACL, or a command renamed
away with `rename-command`) fails the start with a `ConfigurationError` naming each command
refused; an outage (a connection refused, lost, timed out) is raised as it came, for the
backend to treat as one. A single-node connection that reaches a node of a Redis Cluster (its
`HELLO` answers `mode cluster`) fails the start too: only that node's slots would work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from redis.exceptions import NoPermissionError, NoScriptError, RedisClusterException, ResponseError
from traffik.backends.redis import scripts
from traffik.exceptions import ConfigurationError

__all__ = [
    "CLIENT_COMMANDS",
    "CLUSTER_COMMANDS",
    "COMMANDS",
    "PROBED",
    "SCRIPT_COMMANDS",
    "acl_advice",
    "acl_rules",
    "check",
    "refusal_in",
    "refused_by_acl",
    "unknown_command",
]

SCRIPT_COMMANDS = (
    "time",
    "get",
    "getrange",
    "set",
    "psetex",
    "setrange",
    "incrby",
    "decrby",
    "pexpire",
    "pttl",
    "del",
)
"""The commands the scripts run (`lua/*.lua`, `redis.call` and `redis.pcall`): Redis checks
the ACL on each, inside the script, as the user who runs it."""

CLIENT_COMMANDS = (
    "ping",
    "evalsha",
    "script|load",
    "get",
    "mget",
    "set",
    "del",
    "unlink",
    "incrby",
    "decrby",
    "pexpire",
    "pttl",
    "scan",
    "multi",
    "exec",
)
"""The commands the backend sends itself: `PING` (start, the circuit's probe), `EVALSHA` and
`SCRIPT LOAD`, the key-value operations (`_commands.py`: `get`, `set`, `delete`,
`increment`, ...), `SCAN` and `UNLINK` (`scan`, `clear`, `reset`), `SET NX PX` (locks) and
`MULTI`/`EXEC` (`multi_set` on one server)."""

CLUSTER_COMMANDS = ("cluster|slots", "command", "asking")
"""What redis-py's cluster client sends besides: its slot map, the commands' key positions,
and `ASKING` while a slot migrates."""

COMMANDS = tuple(dict.fromkeys(CLIENT_COMMANDS[:3] + SCRIPT_COMMANDS + CLIENT_COMMANDS[3:]))
"""Every command a backend on one server needs (a database other than 0 needs `select`)."""

PROBED = (*SCRIPT_COMMANDS, "mget", "scan", "unlink")
"""The commands `lua/start_check.lua` runs. With `PING`, `SCRIPT LOAD` and `EVALSHA`, the start
proves all of `COMMANDS` but `MULTI`/`EXEC` (a transaction cannot run in a script, and one
left open on a pooled connection, its `EXEC` refused, would queue the next commands):
`multi_set`, a primitive no built-in strategy uses, reports their refusal when it runs."""

_CHECK = scripts.SCRIPTS["start_check"]
_CHECK_KEY = "traffik:start-check:{%d}"
"""The key the check writes (and deletes), in the namespace; on a cluster, one per primary
(the hash tag a number that lands on its slots)."""
_TAGS = 16384 * 8
"""How many tags `_node_keys` tries before it gives up on the primaries not yet found (a
primary with no slot is never found: no key goes there)."""

_ACL_SIGNS = (
    "noperm",
    "no permissions",
    "can't run this command",
    "can't access at least one of the keys",
)
"""What the server answers a user its ACL refuses: outside a script (`NOPERM`) and inside
(Redis 7: `The user executing the script can't ...`)."""
_UNKNOWN_SIGNS = ("unknown command", "unknown redis command")
"""What it answers for a command it does not have (renamed away, or an older server)."""


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def refused_by_acl(error: BaseException | str) -> bool:
    """Whether `error` (an exception, or an error reply's text) is the server's ACL refusing a
    command or a key."""
    if isinstance(error, NoPermissionError):
        return True
    if isinstance(error, BaseException) and not isinstance(error, ResponseError):
        return False
    text = str(error).lower()
    return any(sign in text for sign in _ACL_SIGNS)


def unknown_command(error: BaseException | str) -> bool:
    """Whether `error` says the server has no such command (`rename-command` took it away).
    Not `SENTINEL`: a server that lacks it is no Sentinel, which a Sentinel URL's start says
    on its own (redis-py 7 reports it so; redis-py 8 before sending)."""
    if isinstance(error, BaseException) and not isinstance(error, ResponseError):
        return False
    text = str(error).lower()
    return any(sign in text for sign in _UNKNOWN_SIGNS) and "'sentinel'" not in text


def refusal_in(error: BaseException) -> BaseException | None:
    """The refusal (`refused_by_acl`, `unknown_command`) that `error` is, or that caused it:
    redis-py's cluster client reports a refused `CLUSTER SLOTS` as "Cluster mode is not
    enabled", the refusal as its cause. None when there is none."""
    seen: set[int] = set()
    found: BaseException | None = error
    while found is not None and id(found) not in seen:
        if refused_by_acl(found) or unknown_command(found):
            return found
        seen.add(id(found))
        found = found.__cause__ or found.__context__
    return None


def acl_rules(namespace: str | None, *, cluster: bool | None, database: Any = None) -> str:
    """The ACL rules a backend's user needs (`ACL SETUSER <user> on ><password> <rules>`):
    its keys (`~<namespace>:*`) and every command of `COMMANDS`; on a cluster
    `CLUSTER_COMMANDS` too, and `select` for a database other than 0. None (`cluster`,
    `database`) when not known: the rule is then given with its condition."""
    rules = [f"~{namespace}:*" if namespace else "~<namespace>:*"]
    rules += (f"+{command}" for command in COMMANDS)
    if cluster:
        rules += (f"+{command}" for command in CLUSTER_COMMANDS)
    if database is not None and str(database) != "0":
        rules.append("+select")
    text = " ".join(rules)
    if cluster is None:
        text += f" (on a cluster also {' '.join('+' + c for c in CLUSTER_COMMANDS)})"
    if database is None:
        text += " (+select with a database other than 0)"
    return text


def acl_advice(namespace: str | None = None) -> str:
    """What to do about an ACL refusal met while the backend runs (`errors.translate`)."""
    return (
        "the server's ACL refuses the URL's user a command or key Traffik needs: grant it "
        f"{acl_rules(namespace, cluster=None)}; +@scripting grants +evalsha and +script|load "
        "(and more)"
    )


def _command(error: BaseException, sent: str) -> str:
    """The command a `NOPERM` reply names (`... to run the 'select' command`: redis-py sends
    `SELECT` when it connects), else `sent`."""
    text = str(error)
    start = text.find("to run the '")
    if start < 0:
        return sent
    name = text[start + len("to run the '") :].split("'", 1)[0]
    return name.replace("|", " ").upper() or sent


def _cluster_mode(hello: Any) -> bool:
    """Whether a `HELLO` reply (a map in RESP3, pairs in RESP2) says the server runs in cluster
    mode. An error (an older server, which has no HELLO) says nothing."""
    if isinstance(hello, BaseException) or hello is None:
        return False
    if isinstance(hello, Mapping):
        fields = {_text(key): value for key, value in hello.items()}
    else:
        items = list(hello)
        fields = {_text(key): value for key, value in zip(items[::2], items[1::2])}
    return _text(fields.get("mode", "")) == "cluster"


def _failures(reply: Any, where: str) -> list[tuple[str, str]]:
    """The refusals in the check script's reply, `(command, error)` each, `where` after the
    command (a cluster's node); errors of another kind (a full server, a replica) are not the
    check's to report: decisions meet them, and say what to do."""
    items = [_text(item) for item in reply or ()]
    return [
        (command + where, error)
        for command, error in zip(items[::2], items[1::2])
        if refused_by_acl(error) or unknown_command(error)
    ]


def _refused(
    failures: Sequence[tuple[str, str]],
    server: str,
    namespace: str,
    cluster: bool,
    database: Any,
) -> ConfigurationError:
    """The error that fails the start: each command refused, and what to do."""
    acl = [(command, error) for command, error in failures if not unknown_command(error)]
    unknown = [(command, error) for command, error in failures if unknown_command(error)]
    parts = []
    if acl:
        listed = ", ".join(command for command, _ in acl)
        parts.append(
            f"the server's ACL refuses the URL's user commands Traffik needs: {listed} "
            f"({acl[0][1]}); grant the user {acl_rules(namespace, cluster=cluster, database=database)}"
            " (+@scripting grants +evalsha and +script|load, and more)"
        )
    if unknown:
        listed = ", ".join(command for command, _ in unknown)
        parts.append(
            f"the server does not know commands Traffik needs: {listed} ({unknown[0][1]}); "
            "they were renamed or disabled (rename-command in the server's configuration): "
            "Traffik sends them under their own names"
        )
    return ConfigurationError(
        f"Redis at {server}: {'; and '.join(parts)}; this is a setting to fix, not an outage"
    )


def _not_a_cluster_url(server: str) -> ConfigurationError:
    return ConfigurationError(
        f"Redis at {server}: the server is a node of a Redis Cluster (its HELLO answers "
        "mode cluster), reached as a single server: only the keys of that node's slots would "
        "work, every other client's key being MOVED; use redis+cluster://host:port (one or "
        "more of its nodes), or a redis.asyncio.RedisCluster client; this is a setting to fix, "
        "not an outage"
    )


def _raise_unless_refused(error: BaseException, command: str, failures: list[Any]) -> None:
    """Add the refusal `error` is (of `command`, or of the command it names) to `failures`;
    raise `error` when it is no refusal."""
    refusal = refusal_in(error)
    if refusal is None:
        raise error
    failures.append((_command(refusal, command), str(refusal)))


async def _single(client: Any, prefix: str, server: str) -> list[tuple[str, str]]:
    """The check on one server: `PING` alone first (a server that wants a password answers it
    with `NOAUTH`, where a pipeline of scripts, larger than the 16 KiB an unauthenticated
    client may send, gets the connection closed), then every `SCRIPT LOAD`, `HELLO` and the
    check script in one pipeline."""
    failures: list[tuple[str, str]] = []
    try:
        await client.ping()
    except ResponseError as exc:
        _raise_unless_refused(exc, "PING", failures)
    pipe = client.pipeline(transaction=False)
    for script in scripts.SCRIPTS.values():
        pipe.script_load(script.source)
    pipe.execute_command("HELLO")
    pipe.evalsha(_CHECK.sha, 1, prefix + _CHECK_KEY % 0)
    try:
        *loaded, hello, checked = await pipe.execute(raise_on_error=False)
    except ResponseError as exc:  # (refused as it connects: SELECT, as the PING was)
        if not failures:
            _raise_unless_refused(exc, "SCRIPT LOAD", failures)
        return failures
    if _cluster_mode(hello):
        raise _not_a_cluster_url(server)
    for result in loaded:
        if isinstance(result, BaseException):
            _raise_unless_refused(result, "SCRIPT LOAD", failures)
            break
    if isinstance(checked, NoScriptError) and failures:
        return failures  # (its SCRIPT LOAD was refused: said above)
    if isinstance(checked, BaseException):
        _raise_unless_refused(checked, "EVALSHA", failures)
        return failures
    return failures + _failures(checked, "")


def _node_keys(client: Any, prefix: str) -> dict[str, str]:
    """A key of the check for each primary of a cluster that holds slots, by node name (the
    slot map read from redis-py's cache when it has one: a primary with no slot is no key's
    node, and would be sought in vain)."""
    slots = getattr(getattr(client, "nodes_manager", None), "slots_cache", None)
    if isinstance(slots, Mapping) and slots:
        wanted = {nodes[0].name for nodes in slots.values() if nodes}
    else:
        wanted = {node.name for node in client.get_primaries()}
    keys: dict[str, str] = {}
    for tag in range(_TAGS):
        key = prefix + _CHECK_KEY % tag
        node = client.get_node_from_key(key)
        if node is not None and node.name in wanted and node.name not in keys:
            keys[node.name] = key
            if len(keys) == len(wanted):
                break
    return keys


async def _cluster(client: Any, prefix: str) -> list[tuple[str, str]]:
    """The check on a cluster: the scripts loaded on every primary, then the check script on
    each primary that holds slots (the nodes a key may go to), side by side. A replica is
    not checked: it serves keys only once promoted, and a cluster's nodes have their own
    ACLs (`ACL SETUSER` on each, or the same `aclfile`)."""
    failures: list[tuple[str, str]] = []
    try:
        await scripts.load_all(client, True)
    except (ResponseError, RedisClusterException) as exc:  # (the slot map, then the scripts)
        _raise_unless_refused(exc, "SCRIPT LOAD", failures)
        return failures
    keys = _node_keys(client, prefix)
    replies = await asyncio.gather(
        *(client.evalsha(_CHECK.sha, 1, key) for key in keys.values()), return_exceptions=True
    )
    for node, reply in zip(keys, replies):
        if isinstance(reply, BaseException):
            _raise_unless_refused(reply, f"EVALSHA on {node}", failures)
        else:
            failures += _failures(reply, f" on {node}")
    return failures


async def check(
    client: Any, *, cluster: bool, prefix: str, server: str, namespace: str, database: Any
) -> None:
    """Load the scripts on `client`'s server (every primary of a cluster) and prove that the
    server gives the backend's user every command of `PROBED`, `PING`, `SCRIPT LOAD` and
    `EVALSHA`, on the backend's keys (`prefix`).

    Raises:
        ConfigurationError: When the server refuses one (its ACL, `rename-command`), naming
            each refused and what to do; or when a single-server client reaches a cluster
            node.
        Exception: What the client raised otherwise (an outage: the caller translates it).
    """
    if cluster:
        failures = await _cluster(client, prefix)
    else:
        failures = await _single(client, prefix, server)
    if failures:
        raise _refused(failures, server, namespace, cluster, database)
