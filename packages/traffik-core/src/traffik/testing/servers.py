"""Redis and memcached server processes for tests: on free loopback ports, killed, frozen, restarted.

- `RedisServer`: one `redis-server` (`stop()` kills it, `start()` brings it back on the same
  port, `pause()`/`resume()` freeze and thaw it).
- `RedisCluster`: a Redis Cluster of `masters` masters with `replicas` replicas each, ready
  (every slot covered, every replica in sync) when `start()` returns; `master_ports()` and
  `slots_of(port)` say who serves what, `kill(port)` loses a node.
- `MemcachedServer`: one `memcached` (`stop()`/`start()` keep the port; `pause()`/`resume()`).

Needs the binaries on PATH (`redis-server`, `redis-cli`, `memcached`); Linux for `pause()`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from traffik.testing.processes import freeze, thaw

__all__ = [
    "MemcachedServer",
    "RedisCluster",
    "RedisServer",
    "env_flag",
    "free_port",
    "redis_cli",
    "require_binaries",
]


def env_flag(name: str) -> bool:
    """Whether the environment variable `name` says yes (`1`, `true`, `yes`, `on`)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def require_binaries(binaries: Sequence[str], skip_flag: str, hint: str) -> str:
    """The path of `binaries[0]`, for a test fixture that starts a server; a pytest skip when
    `skip_flag` says yes or a binary is not on PATH, except under `CI=true`, where a missing
    binary fails the run (CI must run the server tests, never skip them).

    Args:
        binaries: The executables the server needs, the server's first (`redis-server`).
        skip_flag: The environment variable that skips these tests (`SKIP_REDIS_TESTS`).
        hint: What to do about a missing binary (`install redis-server, or set ...`).

    Returns:
        The first binary's path.
    """
    import pytest  # (only fixtures call this: the kit imports without pytest)

    if env_flag(skip_flag):
        pytest.skip(f"{skip_flag}=true: these tests are skipped")
    missing = [binary for binary in binaries if shutil.which(binary) is None]
    if missing:
        message = f"{'/'.join(missing)} not on PATH ({hint})"
        if env_flag("CI"):
            pytest.fail(f"CI=true: {message}; the server tests must run", pytrace=False)
        pytest.skip(message)
    return str(shutil.which(binaries[0]))


_handed_out: set[int] = set()
"""The ports `free_port` gave in this process: the kernel may offer a closed probe's port
again before the server it was for binds it (a cluster's nodes are given their ports first,
then started), so none is given twice."""


def free_port(*, with_bus: bool = False) -> int:
    """A loopback port that is free now (and, for cluster nodes, whose bus port +10000 is
    too), never one this process was given before."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port in _handed_out or (with_bus and port + 10000 in _handed_out):
            continue
        if with_bus:
            if port + 10000 >= 65536:
                continue
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            _handed_out.add(port + 10000)
        _handed_out.add(port)
        return port


def redis_cli(port: int, *args: str) -> str:
    """What `redis-cli -p port args...` prints (empty when the server does not answer)."""
    return subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout


class RedisServer:
    """A `redis-server` child process on a fixed loopback port (module docstring)."""

    def __init__(self, directory: Path, port: int, *extra: str) -> None:
        self.directory = directory
        self.port = port
        self.extra = extra
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.directory), *self.extra),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while redis_cli(self.port, "ping").strip() != "PONG":
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()  # (not left running, unseen, when it was only slow)
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)
        if f"process_id:{self._process.pid}" not in redis_cli(self.port, "info", "server"):
            self.stop()  # another server holds the port: this one could not bind it
            raise RuntimeError(
                f"redis-server did not start on port {self.port}: another server answers there"
            )
        return self

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections open, nothing answers."""
        assert self._process is not None
        freeze(self._process)

    def resume(self) -> None:
        assert self._process is not None
        thaw(self._process)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None


class RedisCluster:
    """`masters` cluster-mode servers with `replicas` replicas each, on loopback (module docstring).

    `node_timeout` (ms) is how long a silent master takes to be declared failed, after which
    its replica is promoted; `extra` options go to every server (like
    `("--cluster-require-full-coverage", "no")`).
    """

    def __init__(
        self,
        root: Path,
        masters: int = 3,
        replicas: int = 0,
        node_timeout: int = 15000,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.root = root
        self.replicas = replicas
        self.nodes: list[RedisServer] = []
        for i in range(masters * (1 + replicas)):
            port = free_port(with_bus=True)
            options = (
                *("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"),
                *("--cluster-node-timeout", str(node_timeout), *extra),
            )
            self.nodes.append(RedisServer(root / f"node{i}", port, *options))

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self, timeout: float = 60.0) -> RedisCluster:
        """Start every node and form the cluster; on any failure every node is stopped
        before the error propagates (no server left running)."""
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [
                    *("redis-cli", "--cluster", "create"),
                    *(f"127.0.0.1:{node.port}" for node in self.nodes),
                    *("--cluster-replicas", str(self.replicas), "--cluster-yes"),
                ],
                capture_output=True,
                timeout=timeout,
                check=True,
            )
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until every live node says `cluster_state:ok` and every live replica is in sync
        with its master (a replica that never synced does not take over)."""
        deadline = time.monotonic() + timeout
        while True:
            live = [node for node in self.nodes if node.running]
            states = [redis_cli(node.port, "cluster", "info") for node in live]
            roles = [redis_cli(node.port, "info", "replication") for node in live]
            if all("cluster_state:ok" in state for state in states) and all(
                "role:master" in role or "master_link_status:up" in role for role in roles
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not become ready")
            time.sleep(0.1)

    def _table(self) -> list[list[str]]:
        for node in self.nodes:
            if node.running:
                lines = redis_cli(node.port, "cluster", "nodes").splitlines()
                if lines:
                    return [line.split() for line in lines]
        raise RuntimeError("no node of the Redis Cluster answers")

    def master_ports(self) -> list[int]:
        """The ports of the masters that serve slots, as a live node sees them."""
        return [
            int(row[1].split("@")[0].rsplit(":", 1)[1])
            for row in self._table()
            if "master" in row[2] and "fail" not in row[2] and len(row) > 8
        ]

    def slots_of(self, port: int) -> list[tuple[int, int]]:
        """The slot ranges the node on `port` serves."""
        for row in self._table():
            if int(row[1].split("@")[0].rsplit(":", 1)[1]) == port:
                ranges = [part.split("-") for part in row[8:] if not part.startswith("[")]
                return [(int(r[0]), int(r[-1])) for r in ranges]
        return []

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class MemcachedServer:
    """A `memcached` process on a loopback port; `stop()` and `start()` again keep the port.
    `options` are more of memcached's own (`["-I", "2k"]`), after the defaults."""

    def __init__(
        self, binary: str = "memcached", port: Optional[int] = None, options: Sequence[str] = ()
    ) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.options = list(options)
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return f"memcached://127.0.0.1:{self.port}"

    def start(self) -> MemcachedServer:
        command = [self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0"]
        command += ["-m", "64", "-t", "2", *self.options]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command += ["-u", "root"]  # memcached refuses to run as root otherwise
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"memcached on port {self.port} exited at start: {err.strip()}")
            try:
                pid = self._pid_answering()
            except OSError:
                time.sleep(0.02)
                continue
            if pid != self.process.pid:  # another server holds the port: this one cannot bind it
                self.stop()
                raise RuntimeError(
                    f"memcached did not start on port {self.port}: another server answers there"
                )
            return self
        self.stop()
        raise RuntimeError(f"memcached on port {self.port} did not accept connections within 10 s")

    def _pid_answering(self) -> Optional[int]:
        """The process id of the memcached answering on the port (`stats`), None if unsaid."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
            sock.sendall(b"stats\r\n")
            answer = b""
            while not answer.endswith((b"END\r\n", b"ERROR\r\n")):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        for line in answer.split(b"\r\n"):
            if line.startswith(b"STAT pid "):
                return int(line.split()[2])
        return None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it keeps its connections but answers nothing."""
        assert self.process is not None
        freeze(self.process)

    def resume(self) -> None:
        assert self.process is not None
        thaw(self.process)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
            process.wait(timeout=10)
        if process is not None and process.stderr is not None:
            process.stderr.close()
