"""Server processes under test: freezing one so that it holds its connections and answers nothing."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["freeze", "thaw"]


def freeze(process: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """Stop `process` (SIGSTOP) and return once every one of its threads has stopped.

    The signal takes effect asynchronously; without the wait a request sent right after it
    can still be answered. Linux only (it reads `/proc`).
    """
    process.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for stat in Path(f"/proc/{process.pid}/task").glob("*/stat"):
            try:
                states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
            except (OSError, IndexError):
                continue
        if states and all(state in ("T", "t") for state in states):
            return
        time.sleep(0.005)


def thaw(process: subprocess.Popen[Any]) -> None:
    """Let a frozen process run again (SIGCONT)."""
    process.send_signal(signal.SIGCONT)
