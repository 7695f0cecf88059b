"""One full PCL training iteration (all three steps): the reference way against facepcl's trainer.

- ``reference``: :class:`_reference.ReferenceStyleTraining`: float32, eager,
  NCHW; the whole encoder on every call, the encoder called separately on
  frames and flips and on pose anchors and negatives; the face-loss
  negatives built as a ``(2N, 2N-2, D)`` tensor; the orthogonality term
  through the ``D x D`` matrix; ``torch.optim.Adam`` (per-tensor loop); the
  default allocator;
- ``facepcl``: :class:`facepcl.train.trainer.Trainer` as ``facepcl train``
  builds it (``precision=auto``: bf16 autocast where native; channels_last;
  only the branch each loss needs; Gram-matrix face loss; fused Adam; glibc
  malloc kept from returning memory), timed on its three optimizer steps;
- ``facepcl-fp32``: the same trainer with ``precision=fp32`` (for scale).

Both sides get the same inputs (the network inputs of one iteration, made
once by ``facepcl.train.augment.make_inputs`` from a synthetic batch: data
loading and augmentation are not timed; the reference does them in its
loader workers). Batch sizes are the same for both sides: by default the
CPU recipe of the bundled demo model (rec 64, face 64, pose 8 with M = 32
negatives) rather than the paper's 256 / 256 / 10 with M = 100, which take
minutes per iteration on a small CPU (``--batches 256,256,10,100`` runs the
paper's).

The reference runs first, then facepcl: facepcl's trainer switches glibc's
malloc to keep freed memory for the rest of the process, which the baseline
must not get.

Each row reports iterations per second and, on CUDA, the peak memory held
by tensors during that path (``torch.cuda.max_memory_allocated``: weights,
Adam state, activations; the caching allocator reserves somewhat more).

Usage::

    python benchmarks/train_step.py --batches 64,64,8,32
    python benchmarks/train_step.py --device cuda --batches 256,256,10,100   # the paper's batches
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import _bench
import numpy as np
import torch
from _reference import ReferenceStyleTraining


def synthetic_batch(rec: int, face: int, pose: int, m: int, cfg, seed: int = 0) -> dict[str, torch.Tensor]:
    """A collated loader batch (``facepcl.train.data.collate`` layout) of random frames and augmentation draws."""
    from facepcl.train.augment import sample_view_params

    rng = np.random.default_rng(seed)
    s = cfg.data.image_size
    return {
        "rec_frames": torch.from_numpy(rng.integers(0, 256, (rec, s, s, 3), dtype=np.uint8)),
        "rec_noise": torch.from_numpy(rng.standard_normal((rec, 2, s, s, 3), dtype=np.float32)),
        "face_patches": torch.from_numpy(rng.integers(0, 256, (face, 2, s, s, 3), dtype=np.uint8)),
        "face_params": torch.from_numpy(np.stack([sample_view_params(rng, 2, cfg.augment) for _ in range(face)])),
        "pose_frames": torch.from_numpy(rng.integers(0, 256, (pose, s, s, 3), dtype=np.uint8)),
        "pose_params": torch.from_numpy(np.stack([sample_view_params(rng, 2 + m, cfg.augment) for _ in range(pose)])),
    }


def _config(batches: tuple[int, int, int, int], precision: str, device: torch.device):
    from facepcl.train.config import load_config

    rec, face, pose, m = batches
    return load_config("pcl", [f"batch.rec={rec}", f"batch.face={face}", f"batch.pose={pose}",
                               f"batch.pose_negatives={m}", f"precision={precision}", f"device={device.type}",
                               "data.root=unused", "output_dir=unused", "log.tensorboard=false"])


class StepTimes:
    """Seconds of each of the three steps, over every call."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: dict[str, list[float]] = {"rec": [], "face": [], "pose": []}

    def __call__(self, name: str, fn, *args, **kwargs):
        _bench.sync(self.device)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        _bench.sync(self.device)
        self.times[name].append(time.perf_counter() - start)
        return out

    def medians(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.times.items() if v}


def reference_iteration(ref: ReferenceStyleTraining, inputs: dict[str, dict[str, torch.Tensor]],
                        timed: StepTimes) -> list[float]:
    """:meth:`ReferenceStyleTraining.iteration`, step by step, timed."""
    rec, face, pose = inputs["rec"], inputs["face"], inputs["pose"]
    n = rec["s"].shape[0]
    noisy = rec["noisy"].contiguous()
    return [timed("rec", ref.rec, noisy[:n], noisy[n:], rec["s"].contiguous(), rec["s_flip"].contiguous()),
            timed("face", ref.face, face["views"].contiguous()),
            timed("pose", ref.pose, pose["anchors"].contiguous(), pose["negatives"].contiguous())]


def facepcl_iteration(trainer, inputs: dict[str, dict[str, torch.Tensor]], step: int,
                      timed: StepTimes) -> list[float]:
    """The three optimizer steps of ``Trainer.train_step`` on ready inputs (augmentation excluded), timed."""
    from facepcl.train.trainer import mixing_rng

    cfg = trainer.cfg
    a = timed("rec", trainer._optimize, "rec", **inputs["rec"])
    views = inputs["face"]["views"]
    b = timed("face", trainer._optimize, "face", views=views, mixing=trainer.objective.face_loss.draw(
        views.shape[0], mixing_rng(cfg.seed, 1, 1, step)))
    anchors = inputs["pose"]["anchors"]
    c = timed("pose", trainer._optimize, "pose", **inputs["pose"], mixing=trainer.objective.pose_loss.draw(
        anchors.shape[0] // 2, cfg.batch.pose_negatives, mixing_rng(cfg.seed, 2, 1, step)))
    # The trainer reads its metrics back every iteration; so does this.
    return torch.stack([a["loss"].detach(), b["loss"].detach(), c["loss"].detach()]).float().tolist()


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory measurement (CUDA; nothing elsewhere)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """Peak CUDA memory allocated by tensors since :func:`reset_peak`, GiB (None off CUDA)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def count_gflop(fn) -> float:
    """GFLOP of one call of ``fn`` (forward and backward; convolutions and matrix multiplies)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


def run(device: torch.device, batches=(64, 64, 8, 32), rounds: int = 3, fp32: bool = True,
        peak: dict[str, float] | None = None) -> dict[str, Any]:
    from facepcl.train import distributed as D
    from facepcl.train.augment import make_inputs
    from facepcl.train.trainer import COMPONENTS, Trainer, build_model

    env = D.DistEnv(device=device)
    cfg = _config(batches, "auto", device)
    batch = synthetic_batch(*batches, cfg)
    results: dict[str, dict[str, Any]] = {}

    # -- reference first (facepcl's trainer changes the allocator for the rest of the process)
    torch.manual_seed(cfg.seed)
    ref_model = build_model(cfg).to(device).train()
    assert ref_model.config.components == COMPONENTS
    ref = ReferenceStyleTraining(ref_model, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    ref_inputs = make_inputs(batch, cfg, device, channels_last=False)
    _bench.say(f"training iteration, batches rec/face/pose/M = {batches}: reference")
    timed = StepTimes(device)
    reset_peak(device)
    gflop = {"reference": count_gflop(lambda: reference_iteration(ref, ref_inputs, timed))}
    timed.times = {k: [] for k in timed.times}
    sec = _bench.compare({"reference": lambda: reference_iteration(ref, ref_inputs, timed)}, device,
                         rounds=rounds, min_time=0.0, warmup=0, log=_bench.say)["reference"]
    results["reference"] = {"seconds": sec, "precision": "fp32", "steps": timed.medians(), "peak_gib": peak_gib(device)}
    ref.opt.state.clear()  # free the baseline's memory before facepcl's trainer
    ref_model.cpu()

    variants = [("facepcl", "auto")] + ([("facepcl-fp32", "fp32")] if fp32 else [])
    for name, precision in variants:
        cfg = _config(batches, precision, device)
        reset_peak(device)
        trainer = Trainer(cfg, env)
        inputs = make_inputs(batch, cfg, device, trainer.channels_last)
        steps = iter(range(10**9))
        _bench.say(f"training iteration: {name} (precision {trainer.precision})")
        timed = StepTimes(device)

        def one(t=trainer, i=inputs, timed=timed, steps=steps):
            return facepcl_iteration(t, i, next(steps), timed)

        gflop[name] = count_gflop(one)
        timed.times = {k: [] for k in timed.times}
        sec = _bench.compare({name: one}, device, rounds=rounds, min_time=0.0, warmup=0, log=_bench.say)[name]
        results[name] = {"seconds": sec, "precision": trainer.precision, "steps": timed.medians(),
                         "peak_gib": peak_gib(device)}
        if name == "facepcl":
            aug = _bench.compare({"augment": lambda c=cfg, t=trainer: make_inputs(batch, c, device, t.channels_last)},
                                 device, rounds=rounds, min_time=0.5, warmup=1)["augment"]
            results[name]["augment_seconds"] = aug
        del trainer
    rows = []
    for name, r in results.items():
        dtype = "bf16" if r["precision"] == "bf16" else "fp32"
        gflops = gflop[name] / r["seconds"]
        rows.append({"path": name, "precision": r["precision"], "seconds": r["seconds"], "steps": r["steps"],
                     "iterations_per_s": 1.0 / r["seconds"], "peak_gib": r["peak_gib"],
                     "pairs_per_s": batches[0] / r["steps"]["rec"],
                     "ratio": results["reference"]["seconds"] / r["seconds"],
                     "gflop": gflop[name], "gflops": gflops,
                     "peak_fraction": gflops / peak[dtype] if peak and peak.get(dtype) else None})
    return {"batches": list(batches), "rows": rows,
            "augment_seconds": results["facepcl"].get("augment_seconds")}


def markdown(result: dict[str, Any]) -> str:
    rows = [[r["path"], r["precision"], r["seconds"], r["iterations_per_s"], r["steps"]["rec"], r["steps"]["face"],
             r["steps"]["pose"], r["pairs_per_s"], f"{r['ratio']:.2f}x", r["gflop"], r["gflops"],
             "" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.0f}%",
             "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"] for r in result["rows"]]
    rec, face, pose, m = result["batches"]
    return _bench.table(["path", "precision", "s / iteration", "iterations/s", "rec s", "face s", "pose s",
                         "rec pairs/s", "vs reference", "GFLOP / iteration", "GFLOP/s", "of matmul peak",
                         "peak CUDA GiB"], rows) + (
        f"\n\nBatches: rec {rec}, face {face} ({2 * face} views), pose {pose} ({2 * pose} views + {pose * m} "
        f"negatives). facepcl's on-device augmentation of these inputs (not timed above): "
        f"{result['augment_seconds']:.2f} s.")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_args(p)
    p.add_argument("--batches", default="64,64,8,32", help="REC,FACE,POSE,M (default 64,64,8,32)")
    p.add_argument("--no-fp32", dest="fp32", action="store_false", help="skip the facepcl precision=fp32 row")
    a = p.parse_args()
    device = _bench.pick_device(a.device)
    peak = _bench.peaks(device, min_time=2 * a.min_time)
    batches = tuple(int(v) for v in a.batches.split(","))
    result = run(device, batches, a.rounds, a.fp32, peak)
    result["peak_gflops"] = peak
    return _bench.finish(markdown(result), result, a.json,
                         f"matmul peak: fp32 {peak['fp32']:.0f}, bf16 {_bench.gflops_text(peak['bf16'])} GFLOP/s")


if __name__ == "__main__":
    raise SystemExit(main())
