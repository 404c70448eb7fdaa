"""`per_process`: one process's share of each limit a fallback decides on."""

from __future__ import annotations

from typing import Any

import pytest

from traffik.exceptions import ConfigurationError
from traffik.fallback_share import process_share, scaled_rates
from traffik.rates import Rate, parse_rates


@pytest.mark.parametrize(("value", "share"), [(None, 1.0), (0.25, 0.25), (1, 1.0), (0.5, 0.5)])
def test_a_share_given_as_a_number(value: Any, share: float) -> None:
    assert process_share("fallback", value) == share


@pytest.mark.parametrize(("env", "share"), [("4", 0.25), (" 2 ", 0.5), ("", 1.0), (None, 1.0)])
def test_a_share_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: Any, share: float
) -> None:
    if env is None:
        monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    else:
        monkeypatch.setenv("WEB_CONCURRENCY", env)
    assert process_share("fallback", "WEB_CONCURRENCY") == share


@pytest.mark.parametrize("env", ["0", "-2", "four", "1.5"])
def test_a_bad_process_count_is_refused(monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    monkeypatch.setenv("WORKERS", env)
    with pytest.raises(ConfigurationError, match=r"\$WORKERS="):
        process_share("fallback", "WORKERS")


@pytest.mark.parametrize("value", [0, 1.5, -0.1, True, [0.5], float("nan")])
def test_a_bad_share_is_refused(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="failover\\(per_process="):
        process_share("failover", value)


def test_limits_are_scaled_down_and_kept_at_least_one() -> None:
    rates = parse_rates("50/min;3/s;1000/day")
    assert scaled_rates(rates, 0.25) == parse_rates("12/min;1/s;250/day")
    assert scaled_rates(rates, 1.0) is rates
    assert scaled_rates(parse_rates("100/min"), 1 / 3) == parse_rates("33/min")
    assert scaled_rates((Rate(),), 0.5) == (Rate(),)
