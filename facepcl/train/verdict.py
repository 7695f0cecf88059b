"""Does a run learn? Each optimised loss over the first and the last iterations, and a verdict.

A loss *falls measurably* when the mean of its last ``window`` values is
below the mean of its first ``window`` values by at least ``min_drop`` of
the first mean, and by more than twice the standard error of that
difference (the losses are noisy: each iteration draws new frames,
augmentations and negatives).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

LOSSES = ("rec", "face", "pose")


@dataclass(frozen=True)
class LossTrend:
    """One loss over the run.

    Attributes:
        name: Metric name ("rec", "face" or "pose").
        first: Mean over the first window.
        last: Mean over the last window.
        stderr: Standard error of ``first - last``.
        falls: Whether it fell measurably.
    """

    name: str
    first: float
    last: float
    stderr: float
    falls: bool

    @property
    def change(self) -> float:
        """Relative change, ``last / first - 1`` (negative: it fell)."""
        return self.last / self.first - 1.0 if self.first else math.nan


def _mean_var(xs: Sequence[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    var = sum((x - m) ** 2 for x in xs) / max(1, len(xs) - 1)
    return m, var


def trends(history: dict[str, list[float]], window: int, min_drop: float) -> list[LossTrend]:
    """The trend of every loss in ``history`` (values per iteration, in order).

    Raises:
        ValueError: Fewer than ``2 * window`` iterations (the windows would overlap).
    """
    out = []
    for name in LOSSES:
        values = history[name]
        if len(values) < 2 * window:
            raise ValueError(f"a verdict over windows of {window} iterations needs at least {2 * window} "
                             f"iterations, the run made {len(values)}; lower log.verdict_window or run longer")
        (a, va), (b, vb) = _mean_var(values[:window]), _mean_var(values[-window:])
        se = math.sqrt((va + vb) / window)
        falls = a - b >= min_drop * abs(a) and a - b > 2 * se
        out.append(LossTrend(name, a, b, se, falls))
    return out


def report(items: list[LossTrend], window: int) -> str:
    """The verdict as text: one line per loss, then PASS or FAIL."""
    lines = [f"setup check: each optimised loss, mean of the first vs the last {window} iterations"]
    for t in items:
        lines.append(f"  {t.name:<5} {t.first:9.4f} -> {t.last:9.4f}  ({100 * t.change:+6.1f} %, "
                     f"2 x s.e. {2 * t.stderr:.4f})  {'falls' if t.falls else 'DOES NOT FALL'}")
    failed = [t.name for t in items if not t.falls]
    lines.append("PASS: every optimised loss falls" if not failed else
                 f"FAIL: {', '.join(failed)} did not fall measurably; check the data (data.root), the config "
                 "and the installation, see docs/training.md")
    return "\n".join(lines)
