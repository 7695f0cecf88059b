"""Training logs: per-step metrics (JSONL + CSV, TensorBoard when installed), reconstruction grids, progress.

Only rank 0 writes. ``metrics.jsonl`` and ``metrics.csv`` get one row per
logged iteration (losses, DWA weights, learning rate, seconds per
iteration); on resume, rows past the checkpoint's step are dropped first,
so the files always describe one consistent run. Reconstruction grids are
PNGs in ``images/`` laid out as the reference logs them: each row is
``s | s^ | D(F_f^+F_p) | D(F_f+F_p^) | D(F_f+F_p)``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("facepcl.train")


def _truncate(path: Path, keep, header: bool) -> None:
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    head, body = (lines[:1], lines[1:]) if header else ([], lines)
    kept = [ln for ln in body if keep(ln)]
    if len(kept) != len(body):
        from .checkpoint import atomic_write_text

        atomic_write_text(path, "".join(head + kept))


class MetricsLog:
    """Writes metrics rows, images and console lines for rank 0 (a no-op elsewhere).

    Args:
        out_dir: The run's output folder.
        enabled: Whether this process writes (rank 0).
        tensorboard: True, False or "auto".
        resume_step: Drop existing rows with ``step`` above this (None: new run).
    """

    def __init__(self, out_dir: str | Path, *, enabled: bool = True, tensorboard: bool | str = "auto",
                 resume_step: int | None = None) -> None:
        self.out = Path(out_dir)
        self.enabled = enabled
        self.jsonl = self.out / "metrics.jsonl"
        self.csv = self.out / "metrics.csv"
        self._fields: list[str] | None = None
        self._tb = None
        if not enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            for p in (self.jsonl, self.csv):
                p.unlink(missing_ok=True)
        else:
            _truncate(self.jsonl, lambda ln: json.loads(ln).get("step", 0) <= resume_step, header=False)
            _truncate(self.csv, lambda ln: _csv_step(ln) <= resume_step, header=True)
            if self.csv.is_file():
                with self.csv.open(encoding="utf-8") as f:
                    self._fields = next(csv.reader(f), None)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out / "tensorboard"), purge_step=resume_step)
            except ImportError:
                if tensorboard is True:
                    raise ImportError("log.tensorboard=true but tensorboard is not installed; "
                                      "pip install tensorboard, or set log.tensorboard=auto") from None

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (a flat dict of numbers; ``step`` required)."""
        if not self.enabled:
            return
        with self.jsonl.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self._fields is None:
            self._fields = list(row)
        new = not self.csv.is_file()
        with self.csv.open("a", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self._fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, global_step=row["step"])

    def image(self, step: int, strip: torch.Tensor) -> Path | None:
        """Save a reconstruction grid (``(k, 3, H, 5W)`` strip, one sample a row) as PNG."""
        if not self.enabled:
            return None
        from torchvision.utils import make_grid, save_image

        grid = make_grid(strip.float().clamp(0, 1).cpu(), nrow=1)
        path = self.out / "images" / f"recon-{step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, str(path))
        if self._tb is not None:
            self._tb.add_image("reconstruction", grid, global_step=step)
        return path

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _csv_step(line: str) -> int:
    try:
        return int(float(next(csv.reader(io.StringIO(line)))[0]))
    except (StopIteration, ValueError, IndexError):
        return 0


class Progress:
    """A tqdm bar with ETA on rank 0 plus periodic one-line summaries (for logs that are not a terminal).

    Args:
        total: Iterations of the whole run.
        initial: Iterations already done (resume).
        enabled: Whether this process reports (rank 0).
        bar: True, False or "auto" (when stderr is a terminal).
    """

    def __init__(self, total: int, initial: int, *, enabled: bool, bar: bool | str = "auto") -> None:
        self.total, self.done, self.start_done = total, initial, initial
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self._bar = None
        if enabled and (bar is True or (bar == "auto" and sys.stderr.isatty())):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc="facepcl train", unit="it", dynamic_ncols=True)

    def update(self, summary: dict[str, float]) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in summary.items()}, refresh=False)

    def eta_s(self) -> float:
        steps = self.done - self.start_done
        if steps <= 0:
            return math.nan
        return (time.perf_counter() - self.t0) / steps * (self.total - self.done)

    def print(self, text: str) -> None:
        if not self.enabled:
            return
        eta = self.eta_s()
        line = f"{text} | ETA {_hms(eta)}" if math.isfinite(eta) else text
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"
