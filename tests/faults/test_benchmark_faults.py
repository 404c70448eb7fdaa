"""`python -m benchmarks --faults` runs: both stores frozen, with and without their circuit, a
report and valid JSON (the latencies are printed, not asserted: what is asserted is that the
circuit answered more requests while the store was frozen than waiting for it did)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_fault_scenario_runs(tmp_path: Path) -> None:
    out = tmp_path / "faults.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--faults", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "| store | circuit | requests |" in result.stdout
    doc = json.loads(out.read_text(encoding="utf-8"))
    rows = {(row["store"], row["circuit"]): row for row in doc["rows"]}
    assert set(rows) == {(s, c) for s in ("redis", "memcached") for c in (True, False)}
    for store in ("redis", "memcached"):
        assert rows[(store, True)]["requests"] > rows[(store, False)]["requests"]
        assert rows[(store, True)]["recovery_ms"] is not None
