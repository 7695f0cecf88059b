"""Progress bar (tqdm, on stderr) and the final summary line of ``facepcl embed``."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable

from ._types import Stats


def progress_wanted(no_progress: bool, quiet: bool, rank: int, stream=None) -> bool:
    """A bar only on an interactive stderr, unless switched off, and only on rank 0."""
    stream = stream or sys.stderr
    return not (no_progress or quiet) and rank == 0 and bool(getattr(stream, "isatty", lambda: False)())


class Progress:
    """Counts finished inputs; learns the total from a background count of the inputs.

    Args:
        enabled: Show a bar at all.
        count: Callable returning the number of inputs still to do (run in a
            thread, so listing a big tree does not delay the start).
        desc: Bar label.
    """

    def __init__(self, enabled: bool, count: Callable[[], int] | None = None, desc: str = "embed") -> None:
        self.bar = None
        self._total: int | None = None
        self._counter: threading.Thread | None = None
        if not enabled:
            return
        from tqdm.auto import tqdm

        try:
            size = os.get_terminal_size(sys.stderr.fileno())
        except (OSError, ValueError):
            size = os.terminal_size((0, 0))
        # tqdm draws nothing on a terminal that reports no size (a bare pty, some CI consoles): give it one.
        shape = {"dynamic_ncols": True} if min(size) > 0 else {"ncols": 100, "nrows": 20}
        self.bar = tqdm(total=None, desc=desc, unit="input", file=sys.stderr, smoothing=0.1, **shape)
        if count is not None:
            self._counter = threading.Thread(target=self._count, args=(count,), name="facepcl-count", daemon=True)
            self._counter.start()

    def _count(self, count: Callable[[], int]) -> None:
        try:
            self._total = count()
        except Exception:  # the count is a nicety: the run itself reports unreadable inputs
            self._total = None

    def update(self, inputs: int, stats: Stats) -> None:
        if self.bar is None:
            return
        if self._total is not None and self.bar.total != self._total:
            self.bar.total = self._total
        self.bar.set_postfix(faces=stats.faces, frames=stats.frames, skipped=stats.skipped, refresh=False)
        self.bar.update(inputs)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is None:
            return
        if self._counter is not None:
            self._counter.join(timeout=1.0)  # a short wait, so the final bar shows n/total when it can
        if self._total is not None:
            self.bar.total = self._total
        self.bar.close()
        self.bar = None


def count_items(items: Iterable) -> int:
    return sum(1 for _ in items)


def summary_line(stats: Stats, seconds: float, out: str, *, interrupted: bool = False, ranks: int = 1,
                 errors_file: str | None = None, resumed_from: int = 0) -> str:
    """One line: inputs, faces, skipped, throughput (images and frames per second, faces per second).

    Example: ``done: 8 inputs (7 images, 1 videos, 8 frames), 16 faces, 3 skipped in 20.9 s
    (0.7 images/s, 0.8 faces/s) -> out``.
    """
    seconds = max(seconds, 1e-9)
    pictures = stats.images + stats.frames
    parts = [f"{stats.inputs} inputs ({stats.images} images, {stats.videos} videos, {stats.frames} frames)",
             f"{stats.faces} faces", f"{stats.skipped} skipped"]
    head = "interrupted" if interrupted else "done"
    where = f" across {ranks} processes" if ranks > 1 else ""
    rate = f"{pictures / seconds:.1f} images/s, {stats.faces / seconds:.1f} faces/s"
    line = f"{head}{where}: " + ", ".join(parts) + f" in {seconds:.1f} s ({rate}) -> {out}"
    if resumed_from:
        line += f" (resumed; {resumed_from} inputs were done before)"
    if stats.skipped and errors_file:
        line += f"; reasons in {errors_file}"
    if interrupted:
        line += "; run the same command with --resume to continue"
    return line
