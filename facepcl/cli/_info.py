"""``facepcl info``: versions, devices, bf16/AMX and CUDA support, cache paths."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="show versions, devices, bf16/AMX and CUDA availability, cache paths")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def collect() -> dict:
    """What `facepcl info` reports, as a dict."""
    import platform

    import numpy
    import torch

    from .._paths import facepcl_home, hf_home
    from .._version import __version__
    from ..hub import default_model_name

    def version(mod: str) -> str | None:
        try:
            return __import__(mod).__version__
        except Exception:
            return None

    cpu = torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else "unknown"
    flags = _cpu_flags()
    info = {
        "facepcl": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": version("torchvision"),
        "numpy": numpy.__version__,
        "facexlib": version("facexlib"),
        "huggingface_hub": version("huggingface_hub"),
        "threads": torch.get_num_threads(),
        "cpu_capability": cpu,
        "cpu_bf16": bool({"avx512_bf16", "amx_bf16"} & flags),
        "cpu_amx": "amx_tile" in flags,
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cuda_bf16": bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
        "default_model": default_model_name(),
        "hf_home": str(hf_home()),
        "facepcl_home": str(facepcl_home()),
    }
    return info


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for k, v in info.items():
            print(f"{k:<{width}}  {v}")
    return 0
