"""The benchmark command runs and reports every target with a verdict: tiny runs print the report and valid JSON (nothing timed is asserted)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

from traffik.strategies import BUILTIN_STRATEGIES

ROOT = Path(__file__).resolve().parents[1]
_STRATEGIES = [strategy.__name__ for strategy in BUILTIN_STRATEGIES]
_MEMORY_TARGETED = ["FixedWindow", "SlidingWindowCounter", "TokenBucket", "LeakyBucket", "GCRA"]
_NO_FIGURE = ("not measured", "no ratio", "floor not above noise: no ratio")
"""What a check measured when a run too short to tell has no figure (its verdict: None)."""


def _issue_16_figures(doc: dict[str, Any], stores: set[str]) -> list[str]:
    """The name of the check of every figure issue 16 lists, written out from the issue
    (not from `benchmarks.targets`), for the stores of a run."""
    keys = f"{doc['meta']['settings']['keys']:,} keys"
    names = [
        f"memory {strategy}, {workload}, {mode}: overhead"
        for strategy in _MEMORY_TARGETED
        for workload in ("one key", keys)
        for mode in ("sequential", "50 concurrent")
    ]
    names += ["ThrottleMiddleware over a no-op ASGI middleware"]
    names += [
        f"real server: FixedWindow in memory as {way} vs no limiter"
        for way in ("a dependency", "ThrottleMiddleware")
    ]
    if "redis" in stores:
        names += [
            f"redis {strategy}, {workload}, sequential: overhead"
            for strategy in _STRATEGIES
            for workload in ("one key", keys)
        ]
        names += [
            f"redis {strategy}: script server time vs FixedWindow's"
            for strategy in _STRATEGIES
            if strategy != "FixedWindow"
        ]
    if "memcached" in stores:
        contended = [strategy for strategy in _STRATEGIES if strategy != "FixedWindow"]
        names += [
            f"memcached {strategy}, one key, 50 concurrent: commands per decision"
            for strategy in contended
        ]
        names += [
            f"memcached {strategy}, one key: 50 concurrent vs sequential overhead"
            for strategy in contended
        ]
    return names


def _assert_every_target_reported(doc: dict[str, Any], stdout: str, stores: set[str]) -> None:
    """Every figure of issue 16 is a check with a target and a verdict (or why it has no
    figure); the summary counts every check, and the report prints the count last."""
    checks = {check["name"]: check for check in doc["checks"]}
    assert len(checks) == len(doc["checks"]), "two checks share a name"
    for name in _issue_16_figures(doc, stores):
        check = checks.get(name)
        assert check is not None, f"issue 16's figure not reported: {name}"
        assert "16" in check["issues"].split(", "), check
        assert check["limit"], check
        if check["met"] is None:
            assert check["measured"].startswith(_NO_FIGURE), check
    assert checks["real server: FixedWindow in memory as a dependency vs no limiter"]["met"] is None
    for check in doc["checks"]:  # (a store that could not be had says so, with no limit)
        assert check["limit"] or check["name"].endswith(": every target"), check
        if check["met"] is None:
            assert check["measured"], check
    summary = doc["summary"]
    assert summary == {
        "met": sum(1 for c in doc["checks"] if c["met"] is True),
        "missed": sum(1 for c in doc["checks"] if c["met"] is False),
        "not_measured": sum(1 for c in doc["checks"] if c["met"] is None),
    }
    line = (
        f"Targets: {summary['met']} met, {summary['missed']} missed, "
        f"{summary['not_measured']} not measured."
    )
    assert line in stdout
    last_section = max(stdout.index(h) for h in ("### ThrottleMiddleware", "### What a config"))
    assert stdout.index(line) > last_section, "the count must close the report"


def _python(
    *args: str, timeout: float, env: Optional[dict[str, str]] = None
) -> subprocess.CompletedProcess[str]:
    """`python *args` from the repository's root: the finished process, output as text."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow  # starts a benchmark process (5 s)
def test_benchmark_command_runs(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = _python(
        "-m", "benchmarks", "--smoke", "--backends", "memory", "--json", str(out), timeout=300
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
    _assert_every_target_reported(doc, result.stdout, {"memory"})
    middleware = doc["middleware_overhead"]  # (its apps each answered 200, or the run failed)
    assert set(middleware["statuses"]) == {"bare", "noop", "throttled", "floor", "fused", "two"}
    # (a figure, not a timing check: 20 requests on a loaded machine may read below zero)
    assert math.isfinite(middleware["floor_us"]["median"])
    identities = {(row["way"], row["clients"]) for row in doc["identity"]}
    assert identities == {
        (way, family)
        for way in ("remote_address", "uvicorn ProxyHeadersMiddleware")
        for family in ("IPv4", "IPv6")
    }  # (each app told its clients apart and answered 200, or the run failed)
    assert all(math.isfinite(row["returning_us"]["median"]) for row in doc["identity"])
    configurations = {(row["strategy"], row["configuration"]) for row in doc["configurations"]}
    assert len(configurations) == 14  # (each app answered 200 only, or the run failed)
    assert all(math.isfinite(row["overhead_us"]["median"]) for row in doc["configurations"])


def _servers_or_fail_in_ci() -> set[str]:
    """The server stores this machine has (`$TRAFFIK_*_URL` or the binary on PATH); in CI
    a missing one fails the test instead of leaving its figures out."""
    found = set()
    for store, binary, variable in (
        ("redis", "redis-server", "TRAFFIK_REDIS_URL"),
        ("memcached", "memcached", "TRAFFIK_MEMCACHED_URL"),
    ):
        if shutil.which(binary) or os.environ.get(variable):
            found.add(store)
        else:
            assert not os.environ.get("CI"), f"CI needs {binary} on PATH or {variable}"
    return found


@pytest.mark.slow  # every store, a few requests each, and the sections after them (25 s)
def test_every_target_of_every_store_is_reported(tmp_path: Path) -> None:
    """`--smoke` on every store: each of issue 16's figures (Redis's and Memcached's too,
    when this machine has their servers) is a check with a target and a verdict, SQLite's
    comparisons included even when a run this short reads an overhead not above zero, and
    the count of every target closes the report."""
    servers = _servers_or_fail_in_ci()
    out = tmp_path / "bench.json"
    result = _python("-m", "benchmarks", "--smoke", "--json", str(out), timeout=600)
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text(encoding="utf-8"))
    available = {store for store, detail in doc["stores"].items() if "not available" not in detail}
    assert servers <= available, doc["stores"]
    _assert_every_target_reported(doc, result.stdout, available)
    sqlite = [c for c in doc["checks"] if c["name"].startswith("sqlite ")]
    assert sqlite and all(c["issues"] == "14" for c in sqlite)
    assert "redis" not in servers or "### Redis script server time" in result.stdout
    for store in {"redis", "memcached"} - available:
        assert f"{store}: every target" in {c["name"] for c in doc["checks"]}


def test_a_comparison_with_no_ratio_is_reported_not_measured() -> None:
    """A SQLite overhead not above zero (a run too short to tell) gives no ratio: its
    checks say so instead of disappearing from the count."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.results import Row
        from benchmarks.targets import checks, compare_sqlite
    finally:
        sys.path.remove(str(ROOT))

    def row(store: str, overhead: float) -> Row:
        spread = {"median": overhead, "min": overhead, "max": overhead}
        return Row(store, "one key", 1, "GCRA", "throttle", overhead_us=spread)

    rows = [row("sqlite", -0.5), row("memory", 10.0), row("redis", 100.0)]
    found = checks([], [], {}, compare_sqlite(rows, []))
    assert [(c.name.split(": ")[-1], c.met) for c in found] == [
        ("overhead vs memory", None),
        ("Redis vs SQLite", None),
    ]
    assert all(c.measured.startswith("not measured: sqlite overhead -0.5 us") for c in found)


def test_a_verdict_reads_the_figure_as_printed() -> None:
    """A ratio printed 1.25 meets `<= 1.25`; one printed 1.26 misses it."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.targets import printed
    finally:
        sys.path.remove(str(ROOT))
    assert printed(1.2549) <= 1.25 and f"{1.2549:.2f}" == "1.25"
    assert printed(1.2551) > 1.25 and f"{1.2551:.2f}" == "1.26"
    assert printed(0.8996, 3) >= 0.9 and f"{0.8996:.3f}" == "0.900"


@pytest.mark.slow  # starts a server process (4 s)
def test_real_server_benchmark_runs(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    out = tmp_path / "served.json"
    result = _python(
        "-m", "benchmarks", "--real-server", "--smoke", "--json", str(out), timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "FixedWindow / no limiter" in result.stdout
    doc = json.loads(out.read_text(encoding="utf-8"))["real_server"]
    assert set(doc["median_per_second"]) == {
        "no limiter",
        "no-op dependency",
        "FixedWindow (memory)",
        "FixedWindow (memory, middleware)",
        "hand-fused middleware (memory)",
    }
    assert doc["dependency_ratio"] > 0 and doc["ratio_to_dependency"] > 0
    assert doc["middleware_ratio"] > 0 and doc["fused_ratio"] > 0
    assert all(set(run["statuses"]) == {"200"} and run["requests"] for run in doc["runs"])
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.targets import section_checks
    finally:
        sys.path.remove(str(ROOT))
    served = section_checks({"real_server": doc})  # (what the full run counts)
    # (each beside the most its way reaches here: FastAPI's `Depends` alone, the hand-fused
    # middleware)
    assert [(c.measured, c.limit, c.met, c.issues) for c in served] == [
        (
            f"{doc[key]:.3f}x ({floor} {doc[of]:.3f}x)",
            ">= 0.9x the requests per second",
            doc[met],
            "16",
        )
        for key, met, floor, of in (
            ("ratio", "target_met", "a no-op dependency", "dependency_ratio"),
            ("middleware_ratio", "middleware_target_met", "hand-fused", "fused_ratio"),
        )
    ]


@pytest.mark.slow  # times eight apps per workload, and traffik 1.2 in its own process (20 s)
def test_rivals_benchmark_runs(tmp_path: Path) -> None:
    from benchmarks.rival_apps import RIVALS
    from benchmarks.rivals import WORKLOADS

    out = tmp_path / "rivals.json"
    result = _python("-m", "benchmarks", "--rivals", "--smoke", "--json", str(out), timeout=600)
    assert result.returncode == 0, result.stderr
    assert "| limiter | store | workload | request µs | overhead µs |" in result.stdout
    rows = json.loads(out.read_text(encoding="utf-8"))["rows"]
    by_name = {(row["limiter"], row["store"], row["workload"]): row for row in rows}
    redis = shutil.which("redis-server") or os.environ.get("TRAFFIK_REDIS_URL")
    if os.environ.get("CI"):  # in CI a missing server fails the run
        assert redis, "CI needs redis-server on PATH or TRAFFIK_REDIS_URL"
    for store, workload in WORKLOADS:
        mine = by_name["traffik FixedWindow", store, workload]
        if store == "redis" and not redis:
            assert mine["missing"].startswith("Redis not available")
            continue
        assert mine["missing"] is None and mine["overhead_us"] is not None
        for rival in RIVALS:  # an installed rival is measured against traffik
            row = by_name[rival.name, store, workload]
            if rival.installed():
                assert row["missing"] is None and row["overhead_us"] is not None
            else:
                assert row["missing"] == f"not installed: pip install {rival.distribution}"
            if store == "redis" and workload == "one key" and rival.installed():
                assert row["commands"] > 0
        legacy = by_name["traffik 1.2.2", store, workload]  # measured, or why not
        assert legacy["missing"] or legacy["overhead_us"] is not None
    if redis:  # one round trip per decision, however many commands its script runs
        assert by_name["traffik FixedWindow", "redis", "one key"]["commands"] == 1


@pytest.mark.slow  # builds every variant and makes a few requests (15 s)
def test_every_instruction_variant_answers() -> None:
    """What `--instructions` runs under callgrind: each variant's app answers 200 (the
    runner exits non-zero otherwise), traffik 1.2 in a process of its own, the Redis
    variants on a Redis started for the test."""
    from benchmarks import servers
    from benchmarks.instruction_run import GROUPS, LEGACY, ON_REDIS, needs
    from benchmarks.legacy_run import legacy_path

    try:
        server: Optional[servers.Server] = servers.start("redis")
    except servers.ServerUnavailable:
        assert not os.environ.get("CI"), "CI needs redis-server on PATH or TRAFFIK_REDIS_URL"
        server = None
    variants = [v for group in GROUPS.values() for v in group if not needs(v)]
    if server is None:
        variants = [v for v in variants if v not in GROUPS["FastAPI dependency on Redis"][1:]]
    env = {**os.environ, **({"TRAFFIK_REDIS_URL": server.url} if server else {})}
    place, why = legacy_path()
    script = (  # one event loop for all (pyrate-limiter's leak task outlives its own)
        "import asyncio, sys\n"
        "from benchmarks.instruction_run import _run\n"
        "async def every():\n"
        "    for variant in sys.argv[1:]:\n"
        "        await _run(variant, 3)\n"
        "asyncio.run(every())\n"
    )
    try:
        here = [v for v in variants if v.removesuffix(ON_REDIS) != LEGACY]
        done = _python("-c", script, *here, timeout=300, env=env)
        assert done.returncode == 0, done.stderr
        if place is None:  # pip could not reach traffik 1.2: say why, as the report does
            assert why
            return
        for variant in (v for v in variants if v.removesuffix(ON_REDIS) == LEGACY):
            done = _python(
                "-m", "benchmarks.instruction_run", variant, "3", str(place), timeout=300, env=env
            )
            assert done.returncode == 0, done.stderr
    finally:
        if server:
            server.stop()


@pytest.mark.slow  # four uvicorn workers, started one after another (a few seconds)
def test_every_served_instruction_variant_answers() -> None:
    """What `--instructions` counts in its uvicorn worker group, without callgrind: each
    worker answers 200 to requests sent one at a time on one keep-alive connection."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.instructions import one_at_a_time
        from benchmarks.real_server import VARIANTS, Worker
    finally:
        sys.path.remove(str(ROOT))
    for app in VARIANTS.values():
        worker = Worker(app)
        worker.start()
        try:
            assert one_at_a_time(worker.port, 3) == {200: 3}, app
        finally:
            worker.stop()


def test_instruction_ratios() -> None:
    """`--instructions`' arithmetic: overhead over the group's bare request, over its floor's
    overhead, and a rival's over traffik FixedWindow's."""
    from benchmarks.instruction_run import GROUPS
    from benchmarks.instructions import SERVED_GROUP, groups, tabulate

    counts = {variant: 500_000.0 for group in GROUPS.values() for variant in group}
    counts.update({"no limiter": 400_000.0, "no-op dependency": 470_000.0})
    counts.update({"traffik FixedWindow": 498_000.0, "slowapi": 540_000.0})
    counts.update({"bare app": 100_000.0, "no-op middleware": 102_000.0})
    counts.update({"ThrottleMiddleware": 140_000.0})
    served = groups()[SERVED_GROUP]
    counts.update(zip(served, (450_000.0, 520_000.0, 560_000.0, 500_000.0, 480_000.0)))
    rows = tabulate(counts, {"fastapi-limiter": "not installed: pip install fastapi-limiter"})
    found = {row.variant: row for row in rows}
    bare, floor, dependency, middleware, fused = (found[variant] for variant in served)
    assert bare.served == 1 and middleware.served == pytest.approx(0.9)
    assert fused.served == pytest.approx(450 / 480)
    assert dependency.x_floor == pytest.approx(110 / 70) and floor.x_floor is None
    assert found["traffik FixedWindow"].served is None
    assert found["no limiter"].overhead is None and found["no-op dependency"].x_floor is None
    assert found["traffik FixedWindow"].overhead == 98_000
    assert found["traffik FixedWindow"].x_floor == pytest.approx(1.4)
    assert found["traffik FixedWindow"].x_traffik is None
    assert found["slowapi"].x_traffik == pytest.approx(140 / 98)
    assert found["ThrottleMiddleware"].overhead == 40_000
    assert found["ThrottleMiddleware"].x_floor is None  # (its target is in µs)
    assert found["fastapi-limiter"].per_request is None
    assert found["fastapi-limiter"].missing == "not installed: pip install fastapi-limiter"


def test_the_many_keys_prefill_counts_in_the_buckets_the_timed_requests_use() -> None:
    # The many-keys workload hits every client once with a request built outside the app
    # (`bare_request`) so that the store holds every key before the timing; that request
    # must name the app's bucket (a request with no route counts under `/**`), or the timed
    # requests open every key again (on Memcached one `add` more each).
    import asyncio

    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.apps import dependency_app
        from benchmarks.asgi import asgi_target, bare_request, clients
    finally:
        sys.path.remove(str(ROOT))
    from traffik import HTTPThrottle, InMemoryBackend

    async def keys() -> tuple[list[str], list[str]]:
        backend = InMemoryBackend(namespace="prefill")
        throttle = HTTPThrottle("prefill", rate="10/min", backend=backend)
        peers = clients(3)
        for peer in peers:
            await throttle.hit(bare_request(peer))
        before = sorted(await backend.keys())
        target = asgi_target("app", dependency_app(throttle), peers)
        for i in range(3):
            await target.one(i)
        return before, sorted(await backend.keys())

    before, after = asyncio.run(keys())
    assert len(before) == 3
    assert after == before


@pytest.mark.slow  # every built-in strategy's ablation and profile, a few requests each (10 s)
@pytest.mark.anyio
async def test_profile_runs_for_every_builtin_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--profile STRATEGY` for each built-in strategy, at the main benchmark's one-key rate
    (a rate a strategy cannot decide exactly is refused when the throttle is built): the
    ablation's rows, their `x floor`, and the floor the store's decision sets."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import profiling
    finally:
        sys.path.remove(str(ROOT))
    for name, value in (("_BLOCK", 5), ("_REPETITIONS", 2), ("_ROUNDS", 1), ("_CHUNK", 5)):
        monkeypatch.setattr(profiling, name, value)
    for strategy in BUILTIN_STRATEGIES:
        out = await profiling.profile(strategy.__name__)
        rows = _ablation_rows(out)
        assert "no-op (request) + the store's decision" in rows, strategy
        assert "throttle (IETF headers, the default)" in rows
        assert "The 1.4 target leaves the throttle" in out
        assert "The throttle's own rate-limit headers cost" in out
        middleware = _ablation_rows(out.split("ThrottleMiddleware (one in-memory", 1)[1])
        assert {"no-op middleware", "ThrottleMiddleware, headers=None"} <= set(middleware)
        # The floor over itself: 1.00, or nan when none of a run this short (two blocks of
        # five requests) timed the no-op dependency above no limiter; the arithmetic is
        # checked on fixed times below.
        assert rows["no-op (request)"][-1] in ("1.00", "nan"), rows["no-op (request)"]


def _ablation_rows(out: str) -> dict[str, list[str]]:
    """The `--profile` ablation table's cells after the variant, by variant."""
    table = out.split("| variant |", 1)[1].split("\n\n", 1)[0]
    cells = [line.strip("|").split("|") for line in table.splitlines()[2:]]
    return {row[0].strip(): [cell.strip() for cell in row[1:]] for row in cells}


@pytest.mark.anyio
async def test_profile_ablation_arithmetic(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--profile`'s ablation table on fixed CPU times: `x floor` is the median over
    repetitions of (variant - no limiter) / (no-op dependency - no limiter), leaving out a
    repetition whose no-op dependency was not above no limiter, and nan when none was."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import profiling
        from benchmarks.timing import Samples
    finally:
        sys.path.remove(str(ROOT))
    from traffik.strategies import FixedWindow

    times = {
        "no limiter": [10_000.0, 10_000.0, 10_000.0],
        "no-op (request)": [15_000.0, 9_000.0, 12_000.0],
        "no-op (request) + the store's decision": [17_000.0, 30_000.0, 13_000.0],
        "no-op (request, response)": [11_000.0, 11_000.0, 11_000.0],
        "no-op (request, response) + 2 headers": [11_500.0, 11_500.0, 11_500.0],
        "throttle, headers=None": [19_000.0, 19_000.0, 19_000.0],
        "no-op middleware": [12_000.0, 12_000.0, 12_000.0],
        "floor middleware (the store's decision, two constant headers)": [13_500.0] * 3,
        "ThrottleMiddleware, headers=None": [15_000.0, 15_000.0, 15_000.0],
        "ThrottleMiddleware (IETF headers, the default)": [17_000.0, 17_000.0, 17_000.0],
        "hand-fused (the throttle's work by hand, `benchmarks.fused`)": [14_000.0] * 3,
        "hand-fused middleware (the throttle's work by hand, `benchmarks.fused`)": [14_500.0] * 3,
    }

    async def fixed_times(targets: list[Any], *how: object) -> Samples:
        samples = Samples([target.name for target in targets])
        for name in samples.typical:
            samples.typical[name] = times.get(name, [20_000.0, 20_000.0, 20_000.0])
        return samples

    monkeypatch.setattr(profiling, "measure", fixed_times)
    out = await profiling._ablation(FixedWindow)
    rows = _ablation_rows(out)
    assert rows["no limiter"] == ["10.0", "0.0", "-2.0", "0.00"]
    assert rows["no-op (request)"] == ["12.0", "2.0", "0.0", "1.00"]
    # (17 - 10) / (15 - 10) and (13 - 10) / (12 - 10): 1.4 and 1.5, the middle repetition out.
    assert rows["no-op (request) + the store's decision"][-1] == "1.45"
    assert rows["throttle (IETF headers, the default)"][-1] == "3.50"  # (2.0 + 5.0) / 2
    assert rows["throttle.hit() alone"] == ["20.0", "", "", ""]
    assert "store's decision alone takes 2.0 us in a request (x floor 1.45)" in out
    # Two headers over the no-op with the throttle's signature (request, response), not
    # over the no-op (request); the throttle's own headers over the same with headers=None.
    assert "writing two headers 0.5 us (over the no-op taking the response too)" in out
    assert "own rate-limit headers cost 1.0 us" in out
    assert "without them it takes 6.0 us over the no-op (request, response)" in out
    # (14 - 10) / (15 - 10) and (14 - 10) / (12 - 10), the repetition below no limiter out)
    assert "costs 2.0 us over the no-op dependency (x floor 1.40)" in out
    middleware = await profiling._middleware()
    assert (
        "Of ThrottleMiddleware's 5.00 us over the no-op middleware, its rate-limit headers "
        "take 2.00 us (over `headers=None`), and without them it takes 3.00 us, against "
        "1.50 us for the floor middleware"
    ) in middleware
    assert "written by hand for this one configuration (`benchmarks.fused`) costs 2.50 us" in (
        middleware
    )

    times["no-op (request)"] = [9_000.0, 10_000.0, 8_000.0]
    rows = _ablation_rows(await profiling._ablation(FixedWindow))
    assert rows["no-op (request)"][-1] == "nan"
    assert rows["no-op (request) + the store's decision"][-1] == "nan"


@pytest.mark.anyio
async def test_bytecode_counts() -> None:
    """`--bytecodes` counts what a request runs: nothing of traffik behind the no-op
    middleware, the throttle's functions behind `ThrottleMiddleware`, the same count for the
    same warmed-up app twice (what the machine's load cannot move); every app of the
    tables answers (2 s)."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import bytecodes, middleware_overhead
        from benchmarks.asgi import asgi_target, clients
    finally:
        sys.path.remove(str(ROOT))

    def target(layer: str) -> Any:
        app = middleware_overhead._app(layer)
        return asgi_target(layer, app, clients(1), middleware_overhead.PATH)

    noop = await bytecodes.count(target("noop"), requests=20, warmup=20)
    assert noop["traffik"] == 0 and noop["functions"] == {}
    throttled = target("throttled")
    first = await bytecodes.count(throttled, requests=20, warmup=20)
    again = await bytecodes.count(throttled, requests=20, warmup=0)
    assert "traffik.throttles._throttle:hit" in first["functions"]
    assert "traffik.middleware:__call__" in first["functions"]
    assert first["traffik"] == pytest.approx(sum(first["functions"].values()), abs=0.5)
    assert first["total"] > noop["total"] + first["traffik"] / 2
    assert again["functions"] == first["functions"]
    tables = bytecodes.markdown(await bytecodes.counts())
    for row in ("throttled", "floor", "no-op dependency", *bytecodes.STRATEGY_NAMES):
        assert f"| {row} |" in tables


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="pinning needs sched_setaffinity and two CPUs",
)
def test_sequential_groups_share_one_cpu_with_the_server_and_give_it_back() -> None:
    from benchmarks import servers

    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is needed: the benchmark pins the server it starts")
    mine = os.sched_getaffinity(0)
    server = servers.start("redis")
    try:
        assert server.process is not None
        threads = servers._threads(server.process.pid)
        before = {tid: os.sched_getaffinity(tid) for tid in threads}
        with servers.one_cpu(server.pid) as cpu:
            assert cpu is not None and cpu in mine
            assert os.sched_getaffinity(0) == {cpu}
            assert {tid: os.sched_getaffinity(tid) for tid in threads} == {
                key: {cpu} for key in threads
            }
        assert os.sched_getaffinity(0) == mine
        assert {tid: os.sched_getaffinity(tid) for tid in threads} == before
        with servers.one_cpu(None) as cpu:  # (concurrent groups, or a server from a URL)
            assert cpu is None and os.sched_getaffinity(0) == mine
        assert servers.Server("redis", "redis://127.0.0.1:1", None).pid is None
    finally:
        server.stop()


@pytest.mark.anyio
async def test_redis_server_time_pairs_each_round_with_fixed_window(redis_url: str) -> None:
    from benchmarks import redis_server_time

    rows = await redis_server_time.server_times(redis_url, calls=5, rounds=3)
    by_name = {row.strategy: row for row in rows}
    assert {"FixedWindow", "GCRA", "TokenBucket", "SlidingWindowLog"} <= set(by_name)
    assert by_name["FixedWindow"].ratio == 1.0  # (each round's own figure over itself)
    assert by_name["FixedWindow"].target is None and by_name["FixedWindow"].met is None
    for row in rows:
        assert row.usec_per_call > 0, row
        if row.ratio is not None and row.strategy != "FixedWindow":  # (the trivial script has none)
            assert row.met == (round(row.ratio, 2) <= redis_server_time.TARGET)
    table = redis_server_time.markdown(rows)
    assert "| <= 2 (issue 16) | met |" in table or "| <= 2 (issue 16) | **MISSED** |" in table
