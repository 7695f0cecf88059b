"""``facepcl embed`` throughput on a folder of real photos, default (fast) and ``--mode exact``, against the naive loop.

Copies the sample photos of ``end_to_end.py`` ``--repeat`` times into a
temporary folder (distinct file names), saves a random-weight model, and runs
the real command in a subprocess, once as is and once with ``--mode exact``. The
command's own summary gives the throughput of its embedding loop (decoding,
detection, alignment, encoding, writing Parquet); the wall time adds
start-up (imports, model and detector loading). The naive facexlib loop of
``end_to_end.py`` runs over the same files in this process for the ratio.

Usage::

    python benchmarks/cli.py --repeat 10
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _bench
import torch
from _reference import NaiveFacexlibPipeline
from end_to_end import photo_paths

_RATE = re.compile(r"in ([\d.]+) s \(([\d.]+) images/s, ([\d.]+) faces/s\)")


def make_folder(root: Path, repeat: int) -> list[Path]:
    """``root/photos/NNNN-name`` copies of the sample photos."""
    folder = root / "photos"
    folder.mkdir(parents=True)
    out = []
    for i, src in enumerate(photo_paths(repeat)):
        dst = folder / f"{i:04d}-{Path(src).name}"
        shutil.copyfile(src, dst)
        out.append(dst)
    return out


def run_cli(args: list[str]) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "facepcl", "embed", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"facepcl embed failed ({proc.returncode}): {proc.stderr[-2000:]}")
    m = _RATE.search(proc.stderr)
    if not m:
        raise RuntimeError(f"no summary line in: {proc.stderr[-2000:]}")
    return {"wall_s": wall, "loop_s": float(m.group(1)), "images_per_s": float(m.group(2)),
            "faces_per_s": float(m.group(3))}


def run(device: torch.device, repeat: int = 10, rounds: int = 1) -> dict[str, Any]:
    from facepcl import PCLConfig, PCLModel
    from facepcl.align import template

    root = Path(tempfile.mkdtemp(prefix="facepcl-cli-bench-"))
    try:
        torch.manual_seed(0)
        model = PCLModel(PCLConfig(name="random-benchmark")).eval()
        model.save_pretrained(str(root / "model"))
        files = make_folder(root, repeat)
        naive = NaiveFacexlibPipeline(model.to(device), template(model.config.preprocess), device=device)
        naive(files[0])
        _bench.say(f"cli: naive loop over {len(files)} photos")
        start = time.perf_counter()
        for f in files:
            naive(f)
        naive_s = time.perf_counter() - start
        common = [str(root / "photos"), "--model", str(root / "model"), "--device", device.type, "--no-progress"]
        variants = {"facepcl embed": [], "facepcl embed --mode exact": ["--mode", "exact"]}
        rows = [{"command": "naive loop (in process)", "images_per_s": len(files) / naive_s, "wall_s": naive_s,
                 "loop_s": naive_s, "ratio": 1.0}]
        for r in range(rounds):
            for name, extra in variants.items():
                out = root / f"out-{r}-{len(extra)}"
                _bench.say(f"cli: {name}")
                res = run_cli([*common, "-o", str(out), *extra])
                shutil.rmtree(out)
                rows.append({"command": name, **res, "ratio": res["images_per_s"] / (len(files) / naive_s)})
        return {"images": len(files), "rows": rows}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def markdown(result: dict[str, Any]) -> str:
    rows = [[r["command"], r["images_per_s"], r["loop_s"], r["wall_s"], f"{r['ratio']:.2f}x"] for r in result["rows"]]
    return _bench.table(["command", "images/s (loop)", "loop s", "wall s (with start-up)", "vs naive"], rows) + (
        f"\n\n{result['images']} photos in one folder.")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_args(p)
    p.add_argument("--repeat", type=int, default=10, help="copies of the 11 sample photos (default 10: 110 files)")
    a = p.parse_args()
    device = _bench.pick_device(a.device)
    result = run(device, a.repeat, max(1, a.rounds // 3))
    return _bench.finish(markdown(result), result, a.json)


if __name__ == "__main__":
    raise SystemExit(main())
