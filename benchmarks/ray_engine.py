"""``facepcl embed --engine ray`` against plain ``facepcl embed`` on the same cores, and per-image costs by stage.

Copies the sample photos ``--repeat`` times into a temporary folder, starts
one local Ray (``ray.init(num_cpus=CORES)``) in this process, and runs the real command in subprocesses, in interleaved
rounds: local, ray, ray in two stages (``--ray-stages 2``), local, ... (``--ray-address`` of that Ray, so the
ray runs do not pay for starting a cluster, as on a real one). Each run's
summary line gives its loop time (for Ray: from the first window's actor
start to the last row written); the wall time adds imports and model
loading. One more Ray run on a tenth of the photos splits the Ray run's time
into a fixed start-up (the actor pool: imports, model and detector loading)
and a cost per image.

The driver's CPU time per image (the command's process: listing, regrouping
the actors' rows, Parquet and SHA-256 of every shard) bounds what one writer
can take from a large cluster. Then, for the plan in docs/hundred-million-faces.md: milliseconds per image
of each stage in one thread (``profile_stages.stages``: decode, the
detector's resize, detection, alignment, encoding), the encoder's
milliseconds per crop at several batch sizes, and the bytes per face row
of a Parquet export (the bundled pcl-demo model, whose codes are real ones).

Usage::

    python benchmarks/ray_engine.py --repeat 30 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import _bench
import torch
from cli import make_folder, run_cli
from end_to_end import photo_paths
from profile_stages import stages

from tests._threads import torch_threads


def encoder_costs(batches: list[int], mode: str = "fast", min_time: float = 1.0) -> dict[int, float]:
    """Milliseconds per crop of the encoder (64 px crops) at each batch size, in this process's threads."""
    import numpy as np

    from facepcl import PCLConfig, PCLModel
    from facepcl.pipeline import FaceEmbedder

    torch.manual_seed(0)
    emb = FaceEmbedder(PCLModel(PCLConfig(name="random-benchmark")).eval(), device="cpu", mode=mode,
                       batch_size=max(batches), detect=False)
    rng = np.random.default_rng(0)
    out = {}
    for b in batches:
        crops = rng.integers(0, 255, (b, emb.crop_size, emb.crop_size, 3), dtype=np.uint8)
        emb.encode(crops)
        n, start = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - start < min_time:
            emb.encode(crops)
            n += b
        out[b] = 1e3 * (time.perf_counter() - start) / n
    return out


def parquet_bytes_per_row(out: Path) -> float:
    """Bytes of the column chunks (the data, without file footers) per row of an export's Parquet shards."""
    import pyarrow.parquet as pq

    size = rows = 0
    for path in out.glob("part-*.parquet"):
        meta = pq.ParquetFile(path).metadata
        rows += meta.num_rows
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            size += sum(group.column(c).total_compressed_size for c in range(group.num_columns))
    return size / max(1, rows)


def timed_cli(args: list[str]) -> dict[str, Any]:
    """``cli.run_cli`` plus the CPU seconds (user + system) of the command's own process tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = run_cli(args)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {**res, "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def run(repeat: int, rounds: int, cores: int, min_time: float) -> dict[str, Any]:
    import ray

    from facepcl.export import read_embeddings

    root = Path(tempfile.mkdtemp(prefix="facepcl-ray-bench-"))
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        files = make_folder(root, repeat)
        small = root / "small"
        small.mkdir()
        for f in files[: max(1, len(files) // 10)]:
            shutil.copyfile(f, small / f.name)
        common = ["--model", "pcl-demo", "--device", "cpu", "--no-progress"]  # the bundled model: real codes
        engines = {"local": [], "ray": ["--engine", "ray", "--ray-address", address],
                   "ray-2-stages": ["--engine", "ray", "--ray-address", address, "--ray-stages", "2"]}
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in engines}
        for r in range(rounds):
            for name, extra in engines.items():
                out = root / f"out-{name}-{r}"
                _bench.say(f"ray_engine: round {r + 1}/{rounds}: {name} over {len(files)} photos")
                runs[name].append(timed_cli([str(root / "photos"), "-o", str(out), *common, *extra]))
                if r == 0 and name == "local":
                    faces_per_image = read_embeddings(out).num_rows / len(files)
                shutil.rmtree(out)
        _bench.say("ray_engine: ray over a tenth of the photos (start-up vs per-image cost)")
        few = timed_cli([str(small), "-o", str(root / "out-small"), *common, *engines["ray"]])
        n_small = len(list(small.iterdir()))
        # bytes per row on distinct photos: copies of one photo would share Parquet dictionary pages
        unique = root / "unique"
        unique.mkdir()
        for f in files[:11]:
            shutil.copyfile(f, unique / f.name)
        run_cli([str(unique), "-o", str(root / "out-unique"), *common])
        bytes_per_row = parquet_bytes_per_row(root / "out-unique")
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("wall_s", "loop_s", "images_per_s", "cpu_s")}
           for k, v in runs.items()}
    per_image = (med["ray"]["loop_s"] - few["loop_s"]) / max(1, len(files) - n_small)
    fixed = med["ray"]["loop_s"] - per_image * len(files)
    # the driver (the one writer): its CPU per image, start-up (imports, listing) taken out with the small run
    driver_ms = 1e3 * (med["ray"]["cpu_s"] - few["cpu_s"]) / max(1, len(files) - n_small)
    _bench.say("ray_engine: per-stage costs (one thread)")
    with torch_threads(1):
        stage_ms = {m: stages(m, photo_paths(1), reps=2) for m in ("fast", "exact")}
        enc_1 = encoder_costs([1, 8, 32, 128], min_time=min_time)
    enc_n = encoder_costs([1, 8, 32, 128], min_time=min_time)
    return {
        "images": len(files), "cores": cores, "rounds": rounds, "runs": runs, "median": med,
        "ratio_loop": med["ray"]["images_per_s"] / med["local"]["images_per_s"],
        "ratio_loop_2_stages": med["ray-2-stages"]["images_per_s"] / med["local"]["images_per_s"],
        "ratio_wall": med["local"]["wall_s"] / med["ray"]["wall_s"],
        "ray_fixed_s": fixed, "ray_ms_per_image": 1e3 * per_image, "driver_cpu_ms_per_image": driver_ms,
        "local_ms_per_image": 1e3 * med["local"]["loop_s"] / len(files),
        "small": {"images": n_small, **few},
        "stages_ms_1thread": stage_ms, "encoder_ms_per_crop_1thread": enc_1,
        f"encoder_ms_per_crop_{torch.get_num_threads()}threads": enc_n,
        "bytes_per_face_row": bytes_per_row, "faces_per_image": faces_per_image,
        "machine": _bench.machine(),
    }


def markdown(res: dict[str, Any]) -> str:
    med = res["median"]
    rows = [[name, med[name]["images_per_s"], med[name]["loop_s"], med[name]["wall_s"]] for name in med]
    text = _bench.table(["engine", "images/s (loop)", "loop s", "wall s"], rows)
    text += (f"\n\n{res['images']} photos, {res['cores']} cores, median of {res['rounds']} interleaved rounds. "
             f"Ray / local: **{res['ratio_loop']:.2f}x** (loop throughput), {res['ratio_wall']:.2f}x (wall); "
             f"Ray in two stages / local: **{res['ratio_loop_2_stages']:.2f}x** (loop). "
             f"Ray run = {res['ray_fixed_s']:.1f} s start-up + {res['ray_ms_per_image']:.1f} ms per image "
             f"(local: {res['local_ms_per_image']:.1f} ms per image, start-up included). The Ray driver (listing, "
             f"regrouping, writing) used {res['driver_cpu_ms_per_image']:.2f} ms of CPU per image.\n\n")
    srows = []
    for mode, st in res["stages_ms_1thread"].items():
        srows.append([mode, *(st[k] for k in ("decode", "resize", "detect", "align", "encode", "total")),
                      st["faces_per_image"]])
    text += _bench.table(["mode", "decode ms", "resize ms", "detect ms", "align ms", "encode ms", "total ms",
                          "faces/image"], srows)
    threads = next(k for k in res if k.startswith("encoder_ms_per_crop_") and not k.endswith("1thread"))
    erows = [[b, res["encoder_ms_per_crop_1thread"][b], res[threads][b]] for b in res["encoder_ms_per_crop_1thread"]]
    text += "\n\n" + _bench.table(["encoder batch", "ms/crop (1 thread)", f"ms/crop ({threads.rsplit('_', 1)[1]})"],
                                  erows)
    text += (f"\n\nParquet export: {res['bytes_per_face_row']:,.0f} bytes of column data per face row (face, pose, "
             f"trunk: 2048 float32 each, with provenance; 11 distinct photos); {res['faces_per_image']:.2f} faces "
             "per photo in this set.")
    m = res["machine"]
    text += f"\n\nCPU: {m.get('cpu')} ({', '.join(m.get('cpu_flags') or [])}), {m.get('cpus')} cores."
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_args(p)
    p.add_argument("--repeat", type=int, default=30, help="copies of the 11 sample photos (default 30: 330 files)")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray (default: all)")
    a = p.parse_args()
    result = run(a.repeat, a.rounds, a.cores, a.min_time)
    return _bench.finish(markdown(result), result, a.json)


if __name__ == "__main__":
    raise SystemExit(main())
