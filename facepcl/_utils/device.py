"""Explicit device and dtype resolution: no silent fallbacks."""

from __future__ import annotations

import torch

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Turn a device spec into a ``torch.device``.

    ``None`` means CUDA when ``torch.cuda.is_available()``, else CPU; this is
    the documented default, not a fallback. Asking for CUDA (or MPS) where
    there is none raises instead of running somewhere else.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} was asked for but torch sees no CUDA device "
                           f"(torch {torch.__version__}); pass device='cpu' or install a CUDA build of torch")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise RuntimeError(f"device {str(device)!r} was asked for but MPS is not available; pass device='cpu'")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """Turn ``None``/``"bf16"``/``torch.bfloat16``/... into a floating ``torch.dtype`` (default float32)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype {dtype} is not a floating-point type; use float32, bfloat16 or float16")
        return dtype
    try:
        return _DTYPES[str(dtype).lower().removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}") from None
