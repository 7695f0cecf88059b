"""Encoder forward throughput: the reference way (fp32, eager, NCHW) against facepcl's paths, side by side.

For each input size (64, 100, 256 px) and batch (1, 64), in one process and
interleaved rounds:

- ``reference``: the PCL encoder in float32, eager, NCHW under
  ``torch.no_grad`` (benchmarks/_reference.py);
- ``fast``: facepcl's ``mode="fast"`` torch path (a bf16 -- float32 where bf16 is
  not native -- channels_last copy of the encoder, eager; ``encoder_runtime="torch"``);
- ``onnxruntime``: the float32 encoder graph on ONNX Runtime (``encoder_runtime="onnxruntime"``);
- ``onnxruntime-int8``: the int8 encoder of the bundled pcl-demo model's
  calibration (``encoder_runtime="onnxruntime-int8"``; at its calibrated 64 px only);
- ``fast+compile``: ``mode="fast", compile=True`` (the torch path compiled with
  ``torch.compile``, one compilation per input size for every batch size).

It also prints which runtime ``encoder_runtime="auto"`` (the default) picks
on this machine, from its own short measurement. ONNX Runtime's kernels
(MLAS) use the CPU's full instruction set whatever ``ONEDNN_MAX_CPU_ISA``
says; that variable caps torch's oneDNN only.

Reported: images/s, the ratio to the reference, and the achieved GFLOP/s
(the encoder's FLOPs, counted with ``torch.utils.flop_counter``, times
images/s) as a fraction of the matrix-multiply peak of the dtype used.
Weights are the bundled pcl-demo model's (speed does not depend on them;
the int8 graph needs its calibration).

Usage::

    python benchmarks/encoder.py                 # every size and batch
    python benchmarks/encoder.py --sizes 64 --batches 64
    python benchmarks/encoder.py --no-compile    # without the torch.compile path (minutes less)
"""

from __future__ import annotations

import argparse
from typing import Any

import _bench
import torch
from _reference import reference_encoder_forward


def encoder_gflop(model, size: int) -> float:
    """GFLOP of one image through the encoder at ``size`` px (convolutions and attention matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.encoder(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def run(device: torch.device, sizes=(64, 100, 256), batches=(1, 64), rounds: int = 3, min_time: float = 1.0,
        peak: dict[str, float] | None = None, compile: bool = True) -> dict[str, Any]:
    import facepcl
    from facepcl.runtime._accel import EncoderRunner, encoder_plan
    from facepcl.runtime._encoders import EncoderRuntime

    torch.manual_seed(0)
    model = facepcl.load("pcl-demo", device="cpu")
    flops = {s: encoder_gflop(model, s) for s in sizes}
    model.to(device)
    plan = encoder_plan(device, mode="fast")
    fast = EncoderRunner(model.encoder, device, encoder_plan(device, mode="fast", compile=True))
    calibrated = 64
    rows = []
    auto = {}
    for size in sizes:
        runtimes = ["torch"] + (["onnxruntime", "onnxruntime-int8"] if device.type == "cpu" else [])
        runners = {rt: EncoderRuntime(model, device, plan, rt, crop_size=size)
                   for rt in runtimes if rt != "onnxruntime-int8" or size == calibrated}
        if device.type == "cpu":
            choice = EncoderRuntime(model, device, plan, "auto", crop_size=size).choice
            auto[size] = choice.describe()
        for batch in batches:
            x = torch.rand(batch, 3, size, size, device=device)
            xl = x.contiguous(memory_format=torch.channels_last)
            _bench.say(f"encoder {size} px, batch {batch}")
            with torch.inference_mode():
                cases = {"reference": lambda x=x: reference_encoder_forward(model, x)}
                for rt, run in runners.items():
                    name = "fast" if rt == "torch" else rt
                    cases[name] = lambda x=(xl if rt == "torch" else x), run=run: run(x)
                if compile:
                    cases["fast+compile"] = lambda x=xl: fast(x)
                sec = _bench.compare(cases, device, rounds=rounds, min_time=min_time, warmup=2, log=_bench.say)
            for path, s in sec.items():
                ips = batch / s
                dtype = ("int8" if path.endswith("int8") else
                         "fp32" if path in ("reference", "onnxruntime") or not _native(device) else "bf16")
                gflops = ips * flops[size]
                rows.append({"size": size, "batch": batch, "path": path, "dtype": dtype, "images_per_s": ips,
                             "ratio": sec["reference"] / s, "gflops": gflops,
                             "peak_fraction": gflops / peak[dtype] if peak and peak.get(dtype) else None})
    return {"flops_per_image_gflop": flops, "rows": rows, "compilations": fast.compilations[0], "auto": auto,
            "native_bf16": _native(device), "onednn_max_cpu_isa": _bench.onednn_isa()}


def _native(device: torch.device) -> bool:
    from facepcl.runtime._accel import native_bf16

    return native_bf16(device)


def markdown(result: dict[str, Any]) -> str:
    rows = [[r["size"], r["batch"], r["path"], r["dtype"], r["images_per_s"], f"{r['ratio']:.2f}x", r["gflops"],
             "" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.0f}%"] for r in result["rows"]]
    flops = ", ".join(f"{s} px {g:.2f}" for s, g in result["flops_per_image_gflop"].items())
    auto = "; ".join(f"{s} px: {c['runtime']} (measured at batch {c['batch']}: "
                     + ", ".join(f"{k} {1e3 * v:.0f} ms" for k, v in c["seconds"].items()) + ")"
                     for s, c in result.get("auto", {}).items())
    native = "native" if result.get("native_bf16") else "not native (emulated)"
    return (_bench.table(["px", "batch", "path", "dtype", "images/s", "vs reference", "GFLOP/s", "of matmul peak"],
                         rows) + f"\n\nEncoder GFLOP per image: {flops}. bf16 for torch: {native}"
            + (f"; oneDNN ISA: {result['onednn_max_cpu_isa']}" if result.get("onednn_max_cpu_isa") else "")
            + (f". encoder_runtime='auto' picks {auto}" if auto else "") + ".")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_args(p)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 100, 256])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile path")
    a = p.parse_args()
    device = _bench.pick_device(a.device)
    peak = _bench.peaks(device, min_time=2 * a.min_time)
    result = run(device, a.sizes, a.batches, a.rounds, a.min_time, peak, compile=not a.no_compile)
    result["peak_gflops"] = peak
    return _bench.finish(markdown(result), result, a.json,
                         f"matmul peak (2048^3): fp32 {peak['fp32']:.0f} GFLOP/s, "
                         f"bf16 {_bench.gflops_text(peak['bf16'])} GFLOP/s")


if __name__ == "__main__":
    raise SystemExit(main())
