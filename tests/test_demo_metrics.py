"""The demo app counts its decisions for Prometheus and serves them on `/metrics`."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import httpx
import pytest

pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families

from traffik.events import observers

DEMO = Path(__file__).resolve().parents[1] / "examples" / "app.py"


def load_demo() -> ModuleType:
    """A fresh copy of the demo module: its own app, backend and throttles."""
    spec = importlib.util.spec_from_file_location("traffik_demo_metrics_app", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def decisions(text: str) -> dict[tuple[str, str], float]:
    """`traffik_decisions_total` by (throttle, outcome), from Prometheus' text format."""
    return {
        (sample.labels["throttle"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "traffik_decisions"
        for sample in family.samples
        if sample.name == "traffik_decisions_total"
    }


@pytest.mark.anyio
async def test_refusals_show_on_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAFFIK_BACKEND_URL", raising=False)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    demo = load_demo()
    # httpx's transport does not run the lifespan, which installs the observer: run it here.
    async with demo.app.router.lifespan_context(demo.app):
        transport = httpx.ASGITransport(app=demo.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            statuses = [(await client.get("/items")).status_code for _ in range(7)]
            scraped = await client.get("/metrics")
    assert statuses == [200] * 5 + [429] * 2
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    counted = decisions(scraped.text)
    assert counted[("items", "allowed")] == 5
    assert counted[("items", "refused")] == 2
    assert not any(
        type(observer).__module__ == "traffik.metrics.prometheus" for observer in observers()
    )


_WORKER = """
import asyncio, importlib.util, json, sys
import httpx
spec = importlib.util.spec_from_file_location("demo", sys.argv[1])
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)

async def main():
    async with demo.app.router.lifespan_context(demo.app):
        transport = httpx.ASGITransport(app=demo.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            for _ in range(int(sys.argv[2])):
                await client.get("/items")
            print((await client.get("/metrics")).text)

asyncio.run(main())
"""


@pytest.mark.slow  # two Python processes
def test_several_workers_metrics_add_up(tmp_path: Path) -> None:
    """Under several workers (`PROMETHEUS_MULTIPROC_DIR` set), `/metrics` serves every
    worker's decisions added up, whichever worker answers the scrape: one worker's counts
    alone would read as resets from one scrape to the next."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    env.pop("TRAFFIK_BACKEND_URL", None)
    scraped = [
        subprocess.run(
            [sys.executable, "-c", _WORKER, str(DEMO), str(hits)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        for hits in (3, 4)
    ]
    assert decisions(scraped[0])[("items", "allowed")] == 3
    assert decisions(scraped[1])[("items", "allowed")] == 7  # 3 of the first worker, 4 its own
