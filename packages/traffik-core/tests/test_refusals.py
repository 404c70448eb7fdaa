"""`RefusedClients`: a refusal is remembered on the backend's clock, and a clock set back forgets it."""

from __future__ import annotations

from traffik.decision import Decision
from traffik.refusals import RefusedClients


def test_a_refusal_stands_until_its_wait_ends_and_no_longer_once_the_clock_went_back() -> None:
    refused = RefusedClients()
    rates, strategy = ("4/min",), object()
    refused.remember("k", rates, 1, Decision(False, 15_000, 0, 60_000, 4), 1_000_000, strategy)
    standing = refused.check("k", rates, 1, 1_005_000, strategy)
    assert standing is not None and standing.wait_ms == 10_000 and standing.reset_ms == 55_000
    # The clock stepped back 10 minutes: the wait left would be 615 s, which the store may not
    # say (it may admit the hit); the store is asked again.
    assert refused.check("k", rates, 1, 400_000, strategy) is None
    assert len(refused) == 0
    refused.remember("k", rates, 1, Decision(False, 15_000, 0, 60_000, 4), 1_000_000, strategy)
    assert refused.check("k", rates, 1, 1_015_000, strategy) is None  # its wait is over
