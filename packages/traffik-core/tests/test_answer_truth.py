"""What answers tell a client, with periods down to a millisecond: memory and SQLite.

The shared suite (`traffik.testing.truth_conformance`) walks periods of a minute and more on
every backend, since a server's keys expire on its own clock; `InMemoryBackend` and
`SQLiteBackend` expire keys on the test clock, so they walk the short periods too.
"""

from __future__ import annotations

from typing import Callable

import pytest

from traffik.backends.base import ThrottleBackend
from traffik.backends.inmemory import InMemoryBackend
from traffik.backends.sqlite import SQLiteBackend
from traffik.exceptions import ConfigurationError
from traffik.rates import Rate
from traffik.strategies import Strategy
from traffik.testing.truth_conformance import SHORT_PERIODS_MS, TRUTH_STRATEGIES, answer_walks

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "sqlite"])
def make_backend(request: pytest.FixtureRequest) -> Callable[..., ThrottleBackend]:
    if request.param == "memory":
        return lambda **options: InMemoryBackend(**options)
    return lambda **options: SQLiteBackend("sqlite:///:memory:", **options)


@pytest.mark.parametrize("strategy", TRUTH_STRATEGIES, ids=lambda s: repr(s).replace(" ", ""))
async def test_short_periods_tell_the_truth(
    make_backend: Callable[..., ThrottleBackend], strategy: Strategy
) -> None:
    await answer_walks(make_backend, strategy, 20, SHORT_PERIODS_MS)


@pytest.mark.parametrize(("text", "expire"), [("1/3s", 3000), ("10/1500ms", 1500), ("5/1ms", 1)])
def test_periods_below_a_unit_are_written_in_a_smaller_one(text: str, expire: int) -> None:
    """A period of a second and a half is `1500ms`: the walks above take such periods."""
    assert Rate.parse(text).expire == expire


def test_a_fractional_period_is_refused_naming_it() -> None:
    with pytest.raises(ConfigurationError, match=r"'10/1\.5s'.*period '1\.5s'.*ms") as refused:
        Rate.parse("10/1.5s")
    assert isinstance(refused.value, ValueError)
