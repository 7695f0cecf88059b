"""Where the time goes: per-stage milliseconds per image, and the heaviest operators of each network.

Evidence for docs/benchmarks.md ("what limits each target"):

- end to end, stage by stage, one image at a time in one thread (so stages
  do not overlap): decode, the detector's resize, detection, alignment,
  encoding, for the exact and the fast path;
- ``torch.profiler`` tables (self CPU time by operator) of the fast encoder
  at 64 px batch 64, the fast detector on the sample photos, and one
  facepcl training iteration.

Usage::

    python benchmarks/profile_stages.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import _bench
import torch
from end_to_end import photo_paths


def stages(mode: str, paths: list[str], reps: int = 3) -> dict[str, float]:
    """Median milliseconds per image of each stage (one image at a time)."""
    from facepcl import PCLConfig, PCLModel
    from facepcl.pipeline import FaceEmbedder

    torch.manual_seed(0)
    emb = FaceEmbedder(PCLModel(PCLConfig(name="random-benchmark")).eval(), device="cpu", mode=mode,
                       num_workers=0)
    det = emb.detector
    times: dict[str, list[float]] = {k: [] for k in ("decode", "resize", "detect", "align", "encode")}
    faces = 0
    for rep in range(reps + 1):
        t = dict.fromkeys(times, 0.0)
        faces = 0
        for p in paths:
            t0 = time.perf_counter()
            image = emb.load(p)
            t1 = time.perf_counter()
            prepared = det.prepare(image)
            t2 = time.perf_counter()
            found = det.detect_prepared([prepared])[0]
            t3 = time.perf_counter()
            crops = emb.crop(image, found.kps) if len(found) else None
            t4 = time.perf_counter()
            if crops is not None:
                emb.encode(crops)
                faces += len(crops)
            t5 = time.perf_counter()
            for k, a, b in (("decode", t0, t1), ("resize", t1, t2), ("detect", t2, t3), ("align", t3, t4),
                            ("encode", t4, t5)):
                t[k] += b - a
        if rep:  # the first pass warms up
            for k in times:
                times[k].append(1e3 * t[k] / len(paths))
    out = {k: statistics.median(v) for k, v in times.items()}
    out["total"] = sum(out.values())
    out["faces_per_image"] = faces / len(paths)
    return out


def top_ops(fn, rows: int = 12) -> str:
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40)


def profiles() -> dict[str, Any]:
    from facepcl import PCLConfig, PCLModel
    from facepcl.detection import FaceDetector
    from facepcl.io import load_image
    from facepcl.runtime._accel import EncoderRunner, encoder_plan

    torch.manual_seed(0)
    model = PCLModel(PCLConfig(name="random-benchmark")).eval()
    runner = EncoderRunner(model.encoder, torch.device("cpu"), encoder_plan("cpu", mode="fast", compile=True))
    x = torch.rand(64, 3, 64, 64)
    out = {}
    with torch.inference_mode():
        out["encoder fast+compile, 64 px, batch 64"] = top_ops(lambda: runner(x))
        out["encoder reference, 64 px, batch 64"] = top_ops(lambda: model.encoder(x))
    images = [load_image(p) for p in photo_paths(1)]
    det = FaceDetector(device="cpu", mode="fast")
    out["detector fast, 11 photos"] = top_ops(lambda: det.detect_batch(images))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-ops", dest="ops", action="store_false", help="skip the operator tables")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    paths = photo_paths(1)
    rows = []
    for name in ("exact", "fast"):
        s = stages(name, paths)
        rows.append([name, *(s[k] for k in ("decode", "resize", "detect", "align", "encode", "total")),
                     1e3 / s["total"]])
    print(f"torch threads {torch.get_num_threads()}; {len(paths)} photos, one at a time; {_bench.other_load()}\n")
    print(_bench.table(["path", "decode ms", "resize ms", "detect ms", "align ms", "encode ms", "total ms",
                        "images/s (serial)"], rows))
    if a.ops:
        for name, text in profiles().items():
            print(f"\n{name}\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
