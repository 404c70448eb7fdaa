"""Redis and Memcached for the run: a URL from the environment, or a local binary on a free loopback port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

__all__ = ["Server", "ServerUnavailable", "one_cpu", "start"]

_ENV = {"redis": "TRAFFIK_REDIS_URL", "memcached": "TRAFFIK_MEMCACHED_URL"}
_BINARY = {"redis": "redis-server", "memcached": "memcached"}
_SCHEME = {"redis": "redis", "memcached": "memcached"}
_READY_SECONDS = 5.0


class ServerUnavailable(Exception):
    """Neither a URL nor a binary: the message says which variable or binary to provide."""


class Server:
    """Where a store listens; `process` is set when this run started it (and `stop` ends it)."""

    def __init__(self, kind: str, url: str, process: Optional[subprocess.Popen[bytes]]) -> None:
        parts = urlsplit(url)
        self.kind = kind
        self.url = url
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (6379 if kind == "redis" else 11211)
        self.process = process

    @property
    def pid(self) -> Optional[int]:
        """The server's process id when this run started it (`one_cpu` may pin it); None
        for a server from a URL."""
        return None if self.process is None else self.process.pid

    def describe(self) -> str:
        if self.process is None:
            return f"{self.url} (from ${_ENV[self.kind]}; shared servers skew command counts)"
        return f"{_BINARY[self.kind]} started for this run on {self.host}:{self.port}"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _threads(pid: int) -> list[int]:
    try:
        return [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
    except (OSError, ValueError):
        return []


@contextmanager
def one_cpu(pid: Optional[int]) -> Iterator[Optional[int]]:
    """This thread and every thread of process `pid` (a server this run started,
    `Server.pid`) on one CPU while the block runs, their CPUs restored after; yields the
    CPU, or None where nothing was pinned (no pid, no `sched_setaffinity`, a single CPU).

    For sequential requests only: the client and the server never run at once there, and a
    wake-up across CPUs costs what the machine makes it cost (on a shared VM, a loopback
    `EVALSHA` took 94 µs or 166 µs, in phases, against 71-75 µs on one CPU), paid only by a
    client that reaches its wait before the reply is in: the lean one. redis-py's `evalsha`
    (the floor) turns the event loop about 4 times first and slept on 4% of its requests;
    the throttle slept on all of them."""
    setaffinity = getattr(os, "sched_setaffinity", None)
    if pid is None or setaffinity is None:
        yield None
        return
    mine = os.sched_getaffinity(0)
    theirs = {tid: os.sched_getaffinity(tid) for tid in _threads(pid)}
    if len(mine) < 2 or not theirs:
        yield None
        return
    cpu: Optional[int] = max(mine)
    try:
        setaffinity(0, {cpu})
        for tid in theirs:
            setaffinity(tid, {cpu})
    except OSError:  # (a thread that ended, a CPU set the container forbids)
        cpu = None
    try:
        yield cpu
    finally:
        setaffinity(0, mine)
        for tid, cpus in theirs.items():
            with suppress(OSError):
                setaffinity(tid, cpus)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command(kind: str, binary: str, port: int) -> list[str]:
    if kind == "redis":
        return [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
    command = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "256", "-c", "4096"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command += ["-u", "root"]  # memcached refuses to run as root without it
    return command


_PID_QUERY = {
    "redis": (b"INFO server\r\n", b"process_id:%d"),
    "memcached": (b"stats\r\n", b"STAT pid %d"),
}
"""What asks a server its process id, and how its answer names it."""


def _wait_listening(process: subprocess.Popen[bytes], port: int, kind: str) -> bool:
    """Whether `process` answers on `port`: not another server that took the port first
    (this one then fails to bind it, maybe after the connection succeeded)."""
    query, pid = _PID_QUERY[kind]
    deadline = time.monotonic() + _READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(query)
                answer = b""
                while pid % process.pid not in answer and len(answer) < 65536:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
                    if answer.endswith((b"END\r\n", b"\r\n\r\n")):
                        break
            return pid % process.pid in answer
        except OSError:
            time.sleep(0.02)
    return False


def start(kind: str) -> Server:
    """The server for `kind` ("redis" or "memcached"): `$TRAFFIK_<KIND>_URL`, else a local binary."""
    url = os.environ.get(_ENV[kind])
    if url:
        return Server(kind, url, None)
    binary = shutil.which(_BINARY[kind])
    if binary is None:
        raise ServerUnavailable(
            f"no {_BINARY[kind]} on PATH and ${_ENV[kind]} is unset; install {_BINARY[kind]} "
            f"or set {_ENV[kind]}={_SCHEME[kind]}://host:port"
        )
    error = ""
    for _ in range(3):  # another process may take the free port first
        port = _free_port()
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(_command(kind, binary, port), stdout=log, stderr=log)
            if _wait_listening(process, port, kind):
                return Server(kind, f"{_SCHEME[kind]}://127.0.0.1:{port}", process)
            process.kill()
            process.wait()
            log.seek(0)
            error = log.read().decode(errors="replace").strip()[-300:]
    raise ServerUnavailable(f"{binary} did not start: {error or 'no output'}")
