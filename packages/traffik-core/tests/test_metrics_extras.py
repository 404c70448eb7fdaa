"""traffik.metrics: the exporters are optional extras that the core never imports."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

EXPORTERS = [
    ("traffik.metrics.prometheus", "prometheus_client", "prometheus"),
    ("traffik.metrics.opentelemetry", "opentelemetry", "opentelemetry"),
]


def test_the_core_imports_no_exporter_library() -> None:
    code = (
        "import sys, traffik, traffik.metrics, traffik.events, traffik.throttles; "
        "traffik.HTTPThrottle; "
        "loaded = [m for m in sys.modules if m.startswith(('prometheus_client', 'opentelemetry'))]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("module", "library", "extra"), EXPORTERS)
def test_a_missing_library_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, library: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, library, None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=rf'pip install "traffik-core\[{extra}\]"'):
        importlib.import_module(module)
