"""Embedding photos beside one CPU-bound neighbour process, against the same machine without it.

In one run, in interleaved rounds, ``FaceEmbedder(model).embed(photos)``
(the default path) is timed alone ("quiet") and with one neighbour process
that spins on one core ("busy"). The slowdown is busy / quiet. The same is
measured in a child process whose OpenMP threads spin-wait as torch's
default does (``OMP_WAIT_POLICY=ACTIVE``: a library user's process that does
not call :func:`facepcl.runtime.set_wait_policy`, which the ``facepcl`` command
and these benchmarks call), and, for comparison, in one with ``OMP_NUM_THREADS=1``.

Target: busy / quiet <= 2.5x with facepcl's defaults. A 2-core machine with
one neighbour has half its capacity left, so about 2x is the floor for
work that used both cores.

Usage::

    python benchmarks/busy_neighbour.py --repeat 1
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _bench
import torch

SETTINGS = {"facepcl default": {}, "spin-wait (OMP_WAIT_POLICY=ACTIVE)": {"OMP_WAIT_POLICY": "ACTIVE"},
            "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"}}


def _spin() -> None:
    while True:
        pass


def measure(repeat: int, rounds: int) -> dict[str, float]:
    """Median seconds per pass over the photos, quiet and busy, interleaved (this process)."""
    import statistics

    import end_to_end

    from facepcl import PCLConfig, PCLModel
    from facepcl.pipeline import FaceEmbedder

    torch.manual_seed(0)
    model = PCLModel(PCLConfig(name="random-benchmark")).eval()
    paths = end_to_end.photo_paths(repeat)
    emb = FaceEmbedder(model, device="cpu")
    emb.embed(paths)  # warm up (detector export, allocator)
    times: dict[str, list[float]] = {"quiet": [], "busy": []}
    ctx = mp.get_context("spawn")
    for _ in range(rounds):
        for state in ("quiet", "busy"):
            neighbour = ctx.Process(target=_spin, daemon=True) if state == "busy" else None
            if neighbour:
                neighbour.start()
                time.sleep(0.5)  # let it get going
            start = time.perf_counter()
            emb.embed(paths)
            times[state].append(time.perf_counter() - start)
            if neighbour:
                neighbour.terminate()
                neighbour.join()
    return {k: statistics.median(v) for k, v in times.items()}


def run(repeat: int = 1, rounds: int = 3) -> dict[str, Any]:
    rows = []
    for name, env in SETTINGS.items():
        _bench.say(f"busy neighbour: {name}")
        child_env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
        child_env.update(env)
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "--repeat", str(repeat),
                               "--rounds", str(rounds)], env=child_env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"busy-neighbour child ({name}) failed: {proc.stderr[-2000:]}")
        sec = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({"setting": name, "quiet_s": sec["quiet"], "busy_s": sec["busy"],
                     "slowdown": sec["busy"] / sec["quiet"]})
        _bench.say(f"  quiet {sec['quiet']:.2f} s, busy {sec['busy']:.2f} s")
    from end_to_end import PHOTOS

    return {"images": (len(PHOTOS) + 2) * repeat, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    rows = [[r["setting"], f"{r['quiet_s']:.2f}", f"{r['busy_s']:.2f}", f"{r['slowdown']:.2f}x"]
            for r in result["rows"]]
    return _bench.table(["setting", "quiet s", "with a busy neighbour s", "slowdown"], rows) + (
        f"\n\n{result['images']} photos per pass, default path; the neighbour is one process spinning on one core.")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_args(p)
    p.add_argument("--repeat", type=int, default=1, help="times the 11 photos are repeated per pass")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(measure(a.repeat, a.rounds)))
        return 0
    result = run(a.repeat, a.rounds)
    return _bench.finish(markdown(result), result, a.json)


if __name__ == "__main__":
    raise SystemExit(main())
