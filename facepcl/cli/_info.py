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
    from importlib import metadata

    import numpy
    import torch

    from .._utils.paths import facepcl_home, hf_home
    from .._utils.version import __version__
    from ..hub import default_model_name
    from ..runtime._accel import native_bf16
    from ..runtime._encoders import recorded_choices

    def version(dist: str) -> str | None:
        # From the installed package's metadata: importing torchvision alone takes over a second
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    cpu = torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else "unknown"
    flags = _cpu_flags()
    info = {
        "facepcl": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pillow": version("pillow"),
        "opencv": version("opencv-python") or version("opencv-python-headless"),
        "pyarrow": version("pyarrow"),
        "onnxruntime": version("onnxruntime"),
        "huggingface_hub": version("huggingface_hub"),
        "torchvision": version("torchvision"),
        "faiss": version("faiss-cpu"),
        "threads": torch.get_num_threads(),
        "cpu_capability": cpu,
        "cpu_bf16": bool({"avx512_bf16", "amx_bf16"} & flags),
        "cpu_amx": "amx_tile" in flags,
        "cpu_native_bf16": native_bf16("cpu"),  # what the fast path uses: torch's oneDNN, within ONEDNN_MAX_CPU_ISA
        "encoder_runtime_choices": recorded_choices(),
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cuda_bf16": bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
        "default_model": default_model_name(),
        "hf_home": str(hf_home()),
        "hf_hub_cache": _hub_setting("HF_HUB_CACHE"),
        "hf_hub_offline": _hub_setting("HF_HUB_OFFLINE"),
        "facepcl_home": str(facepcl_home()),
    }
    return info


def _hub_setting(name: str):
    """huggingface_hub's resolved setting (it reads HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE at import)."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    value = getattr(constants, name, None)
    return value if isinstance(value, bool) or value is None else str(value)


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
