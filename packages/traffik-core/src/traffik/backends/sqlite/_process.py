"""`Process`: this process's id, kept current across forks without a system call per read."""

from __future__ import annotations

import os

__all__ = ["Process"]


class Process:
    """This process's id, kept current by a fork hook: a decision reads it with no system
    call (`os.getpid()` is one, each time)."""

    pid = os.getpid()


def _forked() -> None:
    Process.pid = os.getpid()


if hasattr(os, "register_at_fork"):  # (no fork, no hook, where it is missing: Windows)
    os.register_at_fork(after_in_child=_forked)
