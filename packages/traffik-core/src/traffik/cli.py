"""`python -m traffik`: list, inspect and reset the keys of a namespace on any backend URL.

```
python -m traffik keys    redis://localhost:6379/0 --namespace app --throttle api
python -m traffik inspect redis://localhost:6379/0 --namespace app --throttle api --client 1.2.3.4
python -m traffik reset   redis://localhost:6379/0 --namespace app --throttle api --client 1.2.3.4
```

Keys are `namespace:uid:{client}:METHOD:/route...`; `--throttle` and `--client` narrow them to
one throttle and one client (a string identifier, as the throttle's identifier returns it:
the peer address by default). `reset` deletes what matches and prints how many keys it
removed. Exit status: 0 done, 1 the backend failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional, TextIO

from traffik.buckets import bucket_prefix
from traffik.exceptions import BackendError, ConfigurationError, TraffikError

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend

__all__ = ["main"]


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
        command.add_argument("--namespace", help="the backend's namespace (default: its own)")
        command.add_argument(
            "--throttle", required=name != "keys", help="the throttle's uid, e.g. api:items"
        )
        command.add_argument("--client", help="the client's identifier, e.g. 203.0.113.7")
        command.add_argument(
            "--limit", type=int, default=1000, help="list at most this many keys (default 1000)"
        )
    return parser


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    from traffik.backends import from_url

    options = {} if args.namespace is None else {"namespace": args.namespace}
    backend: ThrottleBackend = from_url(args.url, **options)
    try:
        prefix = backend.get_key(bucket_prefix(args.throttle, args.client))
        keys = sorted(await backend.scan(prefix, limit=args.limit))
        if args.command == "keys":
            for key in keys:
                print(key, file=out)
            print(f"{len(keys)} key(s)", file=out)
        elif args.command == "inspect":
            for key in keys:
                ttl = await backend.ttl(key)
                left = "no expiry" if ttl is None else f"gone in {int(ttl)} ms"
                print(f"{key}  {await backend.get(key)!r}  ({left})", file=out)
            print(f"{len(keys)} key(s)", file=out)
        else:
            removed = sum([await backend.delete(key) for key in keys])
            print(f"removed {removed} key(s)", file=out)
        return 0
    finally:
        await backend.close()


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
        print(f"python -m traffik: {args.url}: {exc}", file=sys.stderr)
        return 1
