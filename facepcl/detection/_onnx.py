"""The fast detector network on ONNX Runtime (CPU): exported once from the bundled weights into facepcl's cache.

On a CPU, ONNX Runtime runs the BatchNorm-folded RetinaFace network faster
than torch's eager channels_last copy of it (docs/benchmarks.md), with the
same float32 arithmetic up to rounding (outputs within 2e-5). The network is exported with
``torch.onnx.export`` from the detector's own fast copy (folded, first
convolution taking RGB) with an NHWC input, at first use, into
``facepcl_home()/detectors`` under a name that carries a digest of the
weights: nothing is downloaded, nothing is written into site-packages, and
changed weights get a new file.

ONNX Runtime's threads follow the process's OpenMP settings
(:func:`facepcl.runtime._onnx.session_options`).
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..runtime._onnx import export_graph, float32_copy, open_session
from ._retinaface import detector_dir

#: Bump when the exported graph changes (input layout, opset, wrapper), so old cache files are not reused.
FORMAT = "rgb-nhwc-v1"
_LOCK = threading.Lock()


class _NHWCInput(nn.Module):
    """Takes ``(B, H, W, 3)``: the pipeline's canvas as it lies in memory, so no transpose before the call."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        return self.net(x.permute(0, 3, 1, 2))


def _digest(net: nn.Module) -> str:
    h = hashlib.sha256(FORMAT.encode())
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def exported(name: str, fast_net: nn.Module) -> Path:
    """The ONNX file of ``fast_net`` (the detector's folded float32 copy), exported on first use.

    Args:
        name: Detector name (part of the file name).
        fast_net: The network to export (float32; any memory format).

    Returns:
        The cached ``.onnx`` path.
    """
    path = detector_dir() / f"{name}-{FORMAT}-{_digest(fast_net)}.onnx"
    with _LOCK:
        if path.is_file():
            return path
        export_graph(_NHWCInput(float32_copy(fast_net)).eval(), (torch.zeros(1, 64, 64, 3),), path, ["image"],
                     ["loc", "conf", "landmarks"], dynamic_axes={"image": {0: "batch", 1: "height", 2: "width"}})
    return path


class OrtNetwork:
    """Calls the exported network like the torch one: ``(loc, conf, landmarks)`` float32 tensors.

    Args:
        path: The ``.onnx`` file from :func:`exported`.
    """

    def __init__(self, path: Path) -> None:
        open_session(self, path)

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``batch``: ``(B, 3, H, W)`` float32 in channels_last memory (an NHWC buffer, as the pipeline builds it)."""
        nhwc = np.ascontiguousarray(batch.permute(0, 2, 3, 1).numpy())  # no copy for an NHWC buffer
        return tuple(torch.from_numpy(o) for o in self.session.run(None, {"image": nhwc}))
