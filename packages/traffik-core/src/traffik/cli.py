"""`python -m traffik`: list, inspect and reset the keys of a namespace on any backend URL.

```
python -m traffik keys    redis://localhost:6379/0 --namespace app --throttle api
python -m traffik inspect redis://localhost:6379/0 --namespace app --throttle api --client 1.2.3.4
python -m traffik reset   redis://localhost:6379/0 --namespace app --throttle api --client 1.2.3.4
```

Keys are `namespace:uid:{client}:METHOD:/route...`; `--throttle` and `--client` narrow them to
one throttle and one client (a string identifier, as the throttle's identifier returns it:
the peer address by default, an IPv6 peer's /64 network, which the output names when an
IPv6 address finds no key). `keys` and `inspect` show at most `--limit` keys (a whole
number >= 1, default 1000) and say when there are more; `reset` deletes everything that
matches, `--limit` keys at a time, and prints how many keys it removed. `inspect` shows a
value that is not text (a strategy's packed state) as its numbers where the backend can
decode it, else as hex, and an expiry the backend cannot report (Memcached) as unknown.
On Memcached, keys stored hashed (longer than 250 bytes, or with spaces or non-ASCII
characters) cannot be listed: the output says how many may match.
A store this process alone would see (`memory://`, `sqlite:///:memory:`) and a SQLite file
that does not exist are refused rather than reported empty (or created). `keys` and `inspect`
only read a SQLite file: they never switch its journal mode or create Traffik's tables (a
file without them has no keys), read while the app holds its write lock, and need no
permission to write it. A URL is printed without its password (`redis://user:***@host`) or
any secret in its query.
Exit status: 0 done, 1 the backend failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional, TextIO

from traffik.backends.url_options import redact_url
from traffik.buckets import bucket_prefix
from traffik.exceptions import BackendError, ConfigurationError, TraffikError

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend

__all__ = ["main"]


def _limit(text: str) -> int:
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of keys: give a whole number >= 1 (default 1000)"
        )
    return limit


def _name(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty: an empty name matches nothing")
    return text


def _shown(value: object) -> str:
    """A value as printed: text quoted, anything else (bytes, undecodable text) as hex."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes kept as surrogates
            value = value.encode("utf-8", "surrogateescape")
        else:
            return repr(value)
    if isinstance(value, (bytes, bytearray)):
        return f"hex {bytes(value).hex()}"
    return repr(value)


def _key(key: str) -> str:
    return key if key.isprintable() else _shown(key)


def _hidden(keys: list[str]) -> str:
    hidden = getattr(keys, "hidden", 0)
    if not hidden:
        return ""
    return (
        f"; {hidden} more key(s) may match but are stored hashed (too long, or not plain "
        "ASCII) and cannot be listed on this backend"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m traffik",
        description="List, inspect and reset rate-limit keys on a backend.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, summary in (
        ("keys", "list the keys of a namespace (of one throttle, of one client)"),
        ("inspect", "show the keys of one throttle (and client) with their values and TTLs"),
        ("reset", "delete the keys of one throttle (and client): a fresh budget"),
    ):
        command = commands.add_parser(name, help=summary, description=summary)
        command.add_argument("url", help="backend URL, e.g. redis://localhost:6379/0")
        command.add_argument(
            "--namespace", type=_name, help="the backend's namespace (default: its own)"
        )
        command.add_argument(
            "--throttle",
            type=_name,
            required=name != "keys",
            help="the throttle's uid, e.g. api:items",
        )
        command.add_argument(
            "--client", type=_name, help="the client's identifier, e.g. 203.0.113.7"
        )
        command.add_argument(
            "--limit",
            type=_limit,
            default=1000,
            help="keys, inspect: list at most this many keys; reset: delete this many at a "
            "time (a whole number >= 1, default 1000)",
        )
    return parser


_SHARED_STORES = (
    "give the store the app writes to, shared between processes: sqlite:///path/to/file.db, "
    "redis://host:6379/0 or memcached://host:11211"
)


def _unseen(url: str, backend: ThrottleBackend) -> Optional[str]:
    """Why this process cannot see what an app counted in `backend` (None when it can): a
    store private to one process, or a SQLite file that is not there (opening it would
    create an empty one). `url` is shown without its secrets."""
    from traffik.backends.inmemory import InMemoryBackend
    from traffik.backends.sqlite import SQLiteBackend

    private = isinstance(backend, InMemoryBackend) or (
        isinstance(backend, SQLiteBackend) and backend.path == ":memory:"
    )
    if private:
        return (
            f"{url} is an in-memory store, private to the process that made it: this command "
            "runs in a process of its own and would only see an empty store. Read or reset a "
            "client from inside the app (await throttle.stat(...), await throttle.reset(...)), "
            f"or {_SHARED_STORES}"
        )
    if isinstance(backend, SQLiteBackend) and not os.path.exists(backend.path):
        where = "" if os.path.isabs(backend.path) else f" in {os.getcwd()!r}"
        return (
            f"{url}: no SQLite file at {backend.path!r}{where}; give the file the app uses "
            "(sqlite:////absolute/path.db has four slashes, sqlite:///relative.db is relative "
            "to the current directory)"
        )
    return None


def _reading(url: str, options: dict[str, str], backend: ThrottleBackend) -> ThrottleBackend:
    """The backend `keys` and `inspect` read with: for a SQLite file, one that only reads it
    (a command that lists must not change the app's file, nor wait for its write lock)."""
    from traffik.backends.sqlite import SQLiteBackend
    from traffik.backends.sqlite._backend import SQLiteReader

    if isinstance(backend, SQLiteBackend):
        return SQLiteReader.from_url(url, **options)
    return backend


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    from traffik.backends import from_url

    options = {} if args.namespace is None else {"namespace": args.namespace}
    backend: ThrottleBackend = from_url(args.url, **options)
    problem = _unseen(redact_url(args.url), backend)
    if problem is not None:
        raise ConfigurationError(problem)
    if args.command != "reset":
        backend = _reading(args.url, options, backend)
    try:
        prefix = backend.get_key(bucket_prefix(args.throttle, args.client))
        if args.command == "reset":
            removed, listed = await _reset(backend, prefix, args.limit)
            print(f"removed {removed} key(s){_hidden(listed)}", file=out)
            if not removed:
                _nothing_found(args, backend, out)
            return 0
        listed = await backend.scan(prefix, limit=args.limit + 1)
        keys = sorted(listed[: args.limit])
        for key in keys:
            if args.command == "keys":
                print(_key(key), file=out)
                continue
            ttl = await backend.ttl(key)
            if ttl is not None:
                left = f"gone in {int(ttl)} ms"
            else:
                left = "no expiry" if getattr(backend, "reports_ttl", True) else "expiry unknown"
            print(f"{_key(key)}  {_shown(await backend.get(key))}  ({left})", file=out)
        more = ""
        if len(listed) > args.limit:
            more = f" (the first {args.limit}; raise --limit to see more)"
        print(f"{len(keys)} key(s){more}{_hidden(listed)}", file=out)
        if not keys:
            _nothing_found(args, backend, out)
        return 0
    finally:
        await backend.close()


def _nothing_found(args: argparse.Namespace, backend: ThrottleBackend, out: TextIO) -> None:
    """What to try when no key matched: the namespace searched when none was given (an app's
    `namespace=` is not in its URL), and the client the default identity counts."""
    if args.namespace is None:
        print(
            f"(searched namespace {backend.namespace!r}, the URL's or the backend's default: "
            "an app that sets another namespace= keeps its keys there; pass --namespace)",
            file=out,
        )
    _grouping_hint(args.client, out)


def _grouping_hint(client: Optional[str], out: TextIO) -> None:
    """When `client` is an IPv6 address that the default identity counts by its network
    (`grouped_address`), say which client to name instead: nothing is keyed by the address."""
    from traffik.identity import grouped_address

    if client is None or ":" not in client or "/" in client:
        return
    grouped = grouped_address(client)
    if grouped != client:
        print(
            f"(the default identity counts {client} as {grouped}: try --client {grouped})",
            file=out,
        )


async def _reset(backend: ThrottleBackend, prefix: str, batch: int) -> tuple[int, list[str]]:
    """Delete every key starting with `prefix`, `batch` at a time: the number removed, and the
    last listing (for what it could not see). Stops when a listing names no key it has not
    tried (one it cannot delete, an expired item memcached still lists)."""
    removed, tried = 0, set()
    while True:
        listed = await backend.scan(prefix, limit=batch)
        fresh = [key for key in listed if key not in tried]
        for key in fresh:
            removed += bool(await backend.delete(key))
        tried.update(fresh)
        if not fresh or len(listed) < batch:
            return removed, listed


def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "keys" and args.client is not None and args.throttle is None:
        print("python -m traffik keys: --client needs --throttle", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, out))
    except ConfigurationError as exc:
        print(f"python -m traffik: {exc}", file=sys.stderr)
        return 2
    except NotImplementedError as exc:
        print(f"python -m traffik: {exc}", file=sys.stderr)
        return 2
    except (BackendError, TraffikError, OSError) as exc:
        print(f"python -m traffik: {redact_url(args.url)}: {exc}", file=sys.stderr)
        return 1
