"""Peak memory of `facepcl embed` as the number of inputs grows (it must stay flat: inputs are streamed).

Generates N small synthetic images (32x32 PNGs of smooth random colour
fields; our own code, no downloaded data) in a temporary folder, runs the real
command on the folder in a subprocess, and reads the subprocess's peak
resident set size from ``os.wait4`` (Linux ``ru_maxrss``, KiB).

No trained model is needed: a random-weight model is saved to the temporary
folder (throughput does not depend on the weights). ``--mode no-detect``
embeds every image as an aligned crop, so every input makes a row and the
writers are exercised; ``--mode detect`` runs the face detector on every
image (these synthetic images hold no face, so every input ends in
``_errors.jsonl``).

Usage::

    python benchmarks/cli_memory.py --counts 1000 10000 --mode no-detect
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(folder: Path, n: int, size: int = 32, seed: int = 0) -> None:
    """Write ``n`` PNGs, 100 per sub-folder (as datasets are usually laid out)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        sub = folder / f"{i // 100:05d}"
        if i % 100 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        # a smooth field (4x4 noise upsampled) compresses like a photo thumbnail, not like white noise
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BILINEAR).save(sub / f"img{i:06d}.png")


def run_embed(args: list[str], env: dict[str, str]) -> tuple[int, float, int, str]:
    """Run the command; returns (exit code, seconds, peak RSS in KiB, stderr tail)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - start, int(usage.ru_maxrss), stderr.strip()[-400:]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--mode", choices=("no-detect", "detect"), default="no-detect")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--format", default="parquet")
    p.add_argument("--shard-size", type=int, default=None, help="pass --shard-size to the command")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = p.parse_args()

    import torch

    from facepcl import PCLConfig, PCLModel, __version__

    root = Path(tempfile.mkdtemp(prefix="facepcl-mem-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    try:
        torch.manual_seed(0)
        model = root / "model"
        PCLModel(PCLConfig(name="random-benchmark")).save_pretrained(str(model))
        rows = []
        for n in a.counts:
            data = root / f"images-{n}"
            t0 = time.perf_counter()
            make_images(data, n)
            gen = time.perf_counter() - t0
            out = root / f"out-{n}"
            cmd = [sys.executable, "-m", "facepcl", "embed", str(data), "-o", str(out), "--model", str(model),
                   "--device", "cpu", "--batch-size", str(a.batch_size), "--num-workers", str(a.workers),
                   "--format", a.format, "--no-progress"]
            if a.mode == "no-detect":
                cmd.append("--no-detect")
            if a.shard_size:
                cmd += ["--shard-size", str(a.shard_size)]
            rc, secs, peak_kib, tail = run_embed(cmd, env)
            if rc != 0:
                print(tail, file=sys.stderr)
                return rc
            size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
            summary = tail.splitlines()[-1] if tail else ""
            rows.append((n, peak_kib / 1024, secs, size / 2**20, summary))
            print(f"{n} images (generated in {gen:.1f} s): peak RSS {peak_kib / 1024:.0f} MiB, wall {secs:.1f} s, "
                  f"output {size / 2**20:.0f} MiB\n  {summary}", flush=True)
            shutil.rmtree(out)
            shutil.rmtree(data)
        print()
        print(f"facepcl {__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs, mode {a.mode}, "
              f"batch {a.batch_size}, {a.workers} decode threads, format {a.format}, shard size {a.shard_size or 2048}")
        print("| images | peak RSS (MiB) | wall time (s) | output (MiB) |")
        print("|---:|---:|---:|---:|")
        for n, mib, secs, size, _ in rows:
            print(f"| {n:,} | {mib:.0f} | {secs:.1f} | {size:.0f} |")
        shown = ["facepcl", "embed", "IMAGES", "-o", "OUT", "--model", "MODEL", *cmd[cmd.index("--device"):]]
        print("command:", " ".join(shown))
    finally:
        if a.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
