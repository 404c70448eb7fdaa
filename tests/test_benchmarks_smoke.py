"""The benchmark command runs: a tiny in-memory run prints the report and valid JSON (nothing timed is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # starts a benchmark process (5 s)
def test_benchmark_command_runs(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--backends", "memory", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "| store | strategy | workload | conc |" in result.stdout
    assert "### Targets" in result.stdout
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["meta"]["mode"] == "smoke"
    assert set(doc["stores"]) == {"memory"}
    variants = {row["variant"] for row in doc["rows"]}
    assert {"no limiter", "no-op dependency", "FixedWindow", "GCRA"} <= variants
    assert len(doc["bytes_per_key"]) == 8
    assert doc["checks"]


@pytest.mark.slow  # starts a server process (4 s)
def test_real_server_benchmark_runs(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    out = tmp_path / "served.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--real-server", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "FixedWindow / no limiter" in result.stdout
    doc = json.loads(out.read_text(encoding="utf-8"))["real_server"]
    assert set(doc["median_per_second"]) == {
        "no limiter",
        "no-op dependency",
        "FixedWindow (memory)",
        "FixedWindow (memory, middleware)",
    }
    assert doc["dependency_ratio"] > 0 and doc["ratio_to_dependency"] > 0
    assert doc["middleware_ratio"] > 0
    assert all(set(run["statuses"]) == {"200"} and run["requests"] for run in doc["runs"])
