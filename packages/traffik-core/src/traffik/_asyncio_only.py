"""Traffik runs on asyncio: the running loop, or an error that says so.

Starlette and FastAPI also serve on trio (through anyio), and anyio's pytest plugin runs
marked tests on trio when it is installed. There no asyncio loop runs, and Traffik's stores,
locks and coalesced rounds cannot work: a throttle says so with a `ConfigurationError`
(not an outage answered by `on_error`, which would refuse every client).
"""

from __future__ import annotations

import asyncio

from traffik.exceptions import ConfigurationError

__all__ = ["no_asyncio_loop", "outside_asyncio", "running_loop"]


def outside_asyncio(subject: object) -> ConfigurationError:
    """The error for `subject` (a backend, a throttle on its backend) used where no asyncio
    event loop runs."""
    return ConfigurationError(
        f"{subject} runs on asyncio, and no asyncio event loop is running here (trio, or "
        "code run outside any loop): serve the app on asyncio (uvicorn, or hypercorn's "
        "asyncio worker), and in tests run on asyncio (with anyio's pytest plugin, a fixture "
        "`anyio_backend` returning 'asyncio')"
    )


def running_loop(subject: object) -> asyncio.AbstractEventLoop:
    """The running asyncio loop, for `subject`'s work.

    Raises:
        ConfigurationError: When none runs (`outside_asyncio`).
    """
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise outside_asyncio(subject) from None


def no_asyncio_loop() -> bool:
    """Whether no asyncio loop runs in this thread: a failure then is `outside_asyncio`'s,
    whatever it raised (asyncio's "no running event loop", trio refusing an asyncio
    future). Asked on the failure path only."""
    return asyncio._get_running_loop() is None
