"""Shared helpers of the benchmarks: device choice, timing side by side, matmul peaks, machine facts, tables.

Timing method: every case is warmed up, then the cases are timed in
interleaved rounds (A, B, C, A, B, C, ...), each round running a case for at
least ``min_time`` seconds, and the median round is reported. Interleaving
makes ratios meaningful on a machine whose load changes during the run.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# OpenMP's passive wait policy, as the facepcl command sets it; libgomp reads it once, when torch loads.
import facepcl
import facepcl.runtime

facepcl.runtime.set_wait_policy()

# isort: split
import torch  # noqa: E402  (after set_wait_policy)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # benchmarks/ is not a package: let the scripts import each other
# The sample photos are test support (tests/_samples.py), not part of the package: the repository root on
# sys.path lets every benchmark say ``from tests import _samples``.
sys.path.insert(1, str(HERE.parent))

# A fresh facepcl cache for every run (the sample photos stay where they are): the encoder runtime that
# encoder_runtime="auto" picks is measured in this run, never read from an earlier one's record.
from tests import _samples  # noqa: E402

os.environ.setdefault("FACEPCL_SAMPLES", str(_samples.samples_dir()))
_RUN_HOME = tempfile.mkdtemp(prefix="facepcl-bench-")
os.environ["FACEPCL_HOME"] = _RUN_HOME
atexit.register(shutil.rmtree, _RUN_HOME, ignore_errors=True)


def add_common_args(p: argparse.ArgumentParser) -> None:
    """``--device``, ``--rounds``, ``--min-time``, ``--json``."""
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available, else cpu)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per case (median reported)")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds per case per round (at least one call)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")


def pick_device(name: str | None) -> torch.device:
    """The benchmark device: the one asked for, else CUDA when available, else the CPU."""
    from facepcl._utils.device import resolve_device

    return resolve_device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(cases: dict[str, Callable[[], Any]], device: torch.device, *, rounds: int = 3, min_time: float = 1.0,
            warmup: int = 1, log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Seconds per call of each case, timed side by side.

    Args:
        cases: Name -> a function doing one unit of work.
        device: Synchronised around each timed call (CUDA).
        rounds: Interleaved rounds; the median round counts.
        min_time: Each case runs at least this long per round.
        warmup: Untimed calls per case first (compilation, caches, allocator).
        log: Called with a progress line after every round.

    Returns:
        Name -> median seconds per call.
    """
    for fn in cases.values():
        for _ in range(warmup):
            fn()
        sync(device)
    per_round: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(rounds):
        for name, fn in cases.items():
            calls, start = 0, time.perf_counter()
            while True:
                fn()
                calls += 1
                sync(device)
                elapsed = time.perf_counter() - start
                if elapsed >= min_time:
                    break
            per_round[name].append(elapsed / calls)
        if log:
            log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1] * 1e3:.1f} ms" for k, v in per_round.items()))
    return {k: statistics.median(v) for k, v in per_round.items()}


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int = 2048, min_time: float = 2.0) -> float:
    """Achieved GFLOP/s of an ``n x n`` matrix multiply (the machine's practical peak for that dtype)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sec = compare({"mm": lambda: a @ b}, device, rounds=3, min_time=min_time, warmup=2)["mm"]
    return 2 * n**3 / sec / 1e9


def peaks(device: torch.device, min_time: float = 2.0) -> dict[str, float | None]:
    """fp32 and bf16 matmul GFLOP/s on ``device``; bf16 is None where bf16 is not native.

    ``min_time`` is per round (3 rounds); the scripts pass twice their ``--min-time``, so that a quick run
    (``--min-time 0``, the tests) measures one call per round instead of 12 s.

    Emulated bf16 (e.g. an AVX2-only CPU) multiplies 2048^3 matrices in minutes
    and measures nothing facepcl uses: its fast path computes float32 there.
    """
    from facepcl.runtime._accel import native_bf16

    bf16 = matmul_gflops(device, torch.bfloat16, min_time=min_time) if native_bf16(device) else None
    return {"fp32": matmul_gflops(device, torch.float32, min_time=min_time), "bf16": bf16}


def gflops_text(value: float | None) -> str:
    """A peak for a report line: ``"369"``, or ``"not native"`` where it was not measured."""
    return "not native" if value is None else f"{value:.0f}"


def onednn_isa() -> str | None:
    """The instruction set oneDNN dispatches to, from its verbose log (run in a subprocess)."""
    # A bf16 convolution always goes through oneDNN (small float32 ones may not).
    code = ("import torch\nwith torch.no_grad():\n"
            "    torch.nn.functional.conv2d(torch.rand(1, 8, 16, 16).bfloat16(), torch.rand(8, 8, 3, 3).bfloat16())")
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "DNNL_VERBOSE": "1"}
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"isa:([^\n]+)", out.stdout + out.stderr)
    return m.group(1).strip() if m else None


def machine() -> dict[str, Any]:
    """Facts about this machine and software, recorded next to the numbers."""
    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "facepcl": facepcl.__version__,
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", "").strip()
        flags = fields.get("Flags", "").split()
        info["cpu_flags"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16",
                                         "avx512_fp16") if f in flags]
    except (OSError, subprocess.TimeoutExpired):
        info["cpu"] = platform.processor()
    info["onednn_isa"] = onednn_isa()
    from facepcl.runtime._accel import native_bf16

    info["native_bf16_cpu"] = native_bf16("cpu")
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def other_load() -> str:
    """``uptime``'s load averages (other processes make every number here smaller)."""
    la = os.getloadavg()
    return f"load average {la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f}"


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def finish(text: str, result: dict[str, Any], json_path: str | None, note: str = "") -> int:
    """A benchmark's ending: its Markdown, the machine's load (and ``note``), the JSON file; exit code 0."""
    print(text)
    print(f"\n{note + '; ' if note else ''}{other_load()}")
    write_json(json_path, result)
    return 0


def write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
