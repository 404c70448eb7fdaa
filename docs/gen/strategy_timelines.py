"""Strategy timelines: each built-in strategy on one request sequence, drawn as an SVG.

Every strategy runs on an `InMemoryBackend` driven by a `ManualClock`, so a figure is the
strategy's real answers, not a drawing of what it should do. `python docs/gen/strategy_timelines.py
OUT_DIR` writes one `<Strategy>.svg` per strategy; as the mkdocs hook of mkdocs.yml, it adds
them to the site as `img/strategies/<Strategy>.svg` at every build.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from traffik import InMemoryBackend, ManualClock
from traffik.rates import Rate
from traffik.strategies import (
    BUILTIN_STRATEGIES,
    GCRA,
    FixedWindow,
    LeakyBucket,
    LeakyBucketWithQueue,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
    TokenBucketWithDebt,
)

RATE = "4/10s"
# One lone request, a burst across the 10 s mark, then a steady request every 1.5 s.
BURST = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 10.25, 10.5, 10.75, 11.0, 11.25)
REQUESTS = (*BURST, *(14.0 + 1.5 * i for i in range(11)))
SPAN = 30.0
# The parameters drawn: the defaults, except the debt that `TokenBucketWithDebt` exists for.
STRATEGIES = (
    FixedWindow(),
    SlidingWindowCounter(),
    SlidingWindowLog(),
    TokenBucket(),
    TokenBucketWithDebt(max_debt=2),
    LeakyBucket(),
    LeakyBucketWithQueue(),
    GCRA(),
)
assert {type(s) for s in STRATEGIES} == set(BUILTIN_STRATEGIES), "draw every built-in strategy"


@dataclass(frozen=True)
class Timeline:
    """One strategy's answers: `(seconds since start, admitted)` per request, in order."""

    name: str
    label: str
    answers: tuple[tuple[float, bool], ...]


async def run(strategy: Any) -> Timeline:
    clock = ManualClock()
    backend = InMemoryBackend(namespace="timeline", clock=clock)
    rate, start, answers = Rate.parse(RATE), clock(), []
    for at in REQUESTS:
        clock.set(start + at)
        wait_ms = await strategy("client", rate, backend, 1)
        answers.append((at, wait_ms == 0))
    await backend.close()
    return Timeline(type(strategy).__name__, repr(strategy), tuple(answers))


def timelines() -> list[Timeline]:
    async def all_of_them() -> list[Timeline]:
        return [await run(strategy) for strategy in STRATEGIES]

    return asyncio.run(all_of_them())


WIDTH, HEIGHT, LEFT, RIGHT, AXIS_Y = 720, 120, 30, 20, 70


def x_of(seconds: float) -> float:
    return LEFT + seconds / SPAN * (WIDTH - LEFT - RIGHT)


def svg(timeline: Timeline) -> str:
    """The figure: a time axis in seconds, a filled dot per admitted request, a cross per refusal."""
    admitted = sum(ok for _, ok in timeline.answers)
    title = f"{timeline.label} at {RATE}: {admitted} of {len(timeline.answers)} admitted"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12" '
        'role="img">',
        f"<title>{escape(title)}</title>",
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{LEFT}" y="18" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{AXIS_Y}" x2="{WIDTH - RIGHT}" y2="{AXIS_Y}" stroke="#555"/>',
    ]
    for second in range(0, int(SPAN) + 1, 5):
        x = x_of(second)
        dash = "" if second % 10 else ' stroke-dasharray="3,3"'
        parts.append(
            f'<line x1="{x:.1f}" y1="30" x2="{x:.1f}" y2="{AXIS_Y + 4}" stroke="#bbb"{dash}/>'
        )
        parts.append(f'<text x="{x:.1f}" y="{AXIS_Y + 18}" text-anchor="middle">{second}s</text>')
    for at, ok in timeline.answers:
        x = x_of(at)
        if ok:
            parts.append(
                f'<circle cx="{x:.1f}" cy="48" r="5" fill="#2e7d32"><title>{at}s admitted</title></circle>'
            )
        else:
            parts.append(
                f'<path d="M{x - 4:.1f},{44} l8,8 m0,-8 l-8,8" stroke="#c62828" stroke-width="2">'
                f"<title>{at}s refused</title></path>"
            )
    parts.append(
        f'<text x="{LEFT}" y="{HEIGHT - 8}" fill="#555">filled dot: admitted; cross: refused '
        "(429); dashed lines every 10 s, the rate's period</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def figures() -> dict[str, str]:
    """`{"<Strategy>.svg": svg text}` for every built-in strategy."""
    return {f"{t.name}.svg": svg(t) for t in timelines()}


FIGURES_URI = "img/strategies"


def on_files(files: Any, config: Any) -> Any:
    """The mkdocs hook (mkdocs.yml `hooks:`): add every figure to the site, drawn afresh."""
    from mkdocs.structure.files import File

    for name, text in figures().items():
        files.append(File.generated(config, f"{FIGURES_URI}/{name}", content=text))
    return files


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in figures().items():
        (out / name).write_text(text)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "site-figures")
