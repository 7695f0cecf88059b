"""The encoder as an ONNX graph and ONNX Runtime sessions: one export, one check, one set of session options.

:func:`export_graph` and :func:`check_graph` write and verify every ONNX file
facepcl makes (``facepcl onnx`` in :mod:`facepcl.deploy`, the cached graphs
the fast path runs). :func:`encoder_onnx` is the float32 encoder graph the
fast path runs on ONNX Runtime: exported from the model's own encoder at first
use into ``facepcl_home()/encoders`` under its ``encoder_sha256`` (nothing in
site-packages, changed weights get a new file), and checked against the exact
PyTorch path before it is used. :class:`OrtEncoder` calls such a graph like
the torch encoder.

ONNX Runtime's threads follow the process's OpenMP settings
(:func:`session_options`): as many intra-op threads as torch has, and no
spinning unless ``OMP_WAIT_POLICY=ACTIVE`` (see :mod:`facepcl.runtime._threads`).
"""

from __future__ import annotations

import atexit
import copy
import os
import threading
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._utils.atomic import atomic_write
from .._utils.constants import FEATURES
from .._utils.digest import encoder_digest
from .._utils.paths import facepcl_home
from ..errors import OutputError

#: ONNX opset of every graph facepcl writes.
OPSET = 17
#: Largest difference allowed between ONNX Runtime's and PyTorch's float32 outputs.
ATOL = 1e-4
#: Bump when the cached encoder graph changes (wrapper, names, opset), so old cache files are not reused.
ENCODER_FORMAT = "nchw-v1"
_LOCK = threading.Lock()
_OPEN: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_sessions() -> None:
    # Release sessions (and their thread pools) while the interpreter still runs: left to the end of
    # interpreter teardown, an interrupted process aborted there ("terminate called without an active exception").
    for holder in list(_OPEN):
        holder.session = None


def track_session(holder: Any) -> None:
    """Close ``holder.session`` at interpreter exit (before teardown), as every facepcl session is."""
    _OPEN.add(holder)


def open_session(holder: Any, path: Path) -> None:
    """Give ``holder`` ``.path`` and a CPU ``.session`` of the graph at ``path`` (:func:`session_options`), closed
    at interpreter exit (:func:`track_session`)."""
    import onnxruntime as ort

    holder.path = Path(path)
    holder.session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    track_session(holder)


def session_options(threads: int | None = None):
    """ONNX Runtime options that follow the process's OpenMP thread count and wait policy."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "ACTIVE":
        # Spinning threads hold up a busy machine's other work, and this process's own decoding threads.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class EncoderGraph(nn.Module):
    """The encoder with named, flattened outputs in the order the ONNX graph declares them (:data:`FEATURES`)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.encoder(pixels)
        return tuple(getattr(out, f).flatten(1) for f in FEATURES)


def float32_copy(module: nn.Module) -> nn.Module:
    """A float32, CPU, contiguous-format copy of ``module`` (what is exported)."""
    return copy.deepcopy(module).float().to("cpu", memory_format=torch.contiguous_format)


def export_graph(net: nn.Module, example: tuple, path: Path, inputs: list[str], outputs: list[str],
                 opset: int = OPSET, dynamic_axes: dict[str, dict[int, str]] | None = None) -> None:
    """Export ``net`` to ``path`` (atomically); ``dynamic_axes`` default: every input and output with a
    dynamic batch dimension.

    Raises:
        OutputError: The file cannot be written.
    """
    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(net, example, tmp, dynamo=False, opset_version=opset, input_names=inputs,
                              output_names=outputs,
                              dynamic_axes=dynamic_axes or {n: {0: "batch"} for n in inputs + outputs})

    try:
        atomic_write(path, write)
    except OSError as e:
        raise OutputError(f"{path}: cannot write the ONNX file ({e.strerror}); free space or choose another "
                          "folder") from None


def check_graph(path: Path, feed: dict[str, np.ndarray], expected: list[np.ndarray], atol: float = ATOL) -> None:
    """Raise RuntimeError unless ONNX Runtime's outputs of ``path`` on ``feed`` are within ``atol`` of ``expected``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, feed)
    worst = max(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True))
    if not worst <= atol:
        raise RuntimeError(f"{path}: ONNX Runtime's outputs differ from PyTorch's by {worst:.3g} (> {atol:g}); "
                           "the export is not faithful, do not use it")


def export_encoder(encoder: nn.Module, path: Path, crop_size: int, *, opset: int = OPSET,
                   atol: float = ATOL) -> None:
    """Write ``encoder`` as ONNX (input ``pixels`` ``(B, 3, S, S)``, outputs face/pose/trunk ``(B, D)``), checked.

    Args:
        encoder: A PCL encoder (any dtype or device; a float32 CPU copy is exported).
        path: The ``.onnx`` file to write.
        crop_size: Side S of the check batch.
        opset: ONNX opset.
        atol: Largest difference allowed between ONNX Runtime and the float32 eager encoder.

    Raises:
        OutputError: The file cannot be written.
        RuntimeError: ONNX Runtime's outputs differ from PyTorch's by more than ``atol``.
    """
    net = EncoderGraph(float32_copy(encoder)).eval()
    check = torch.rand(3, 3, crop_size, crop_size, generator=torch.Generator().manual_seed(0))
    export_graph(net, (check[:1],), path, ["pixels"], list(FEATURES), opset)
    with torch.no_grad():
        expected = [t.numpy() for t in net(check)]
    check_graph(path, {"pixels": check.numpy()}, expected, atol)


def encoders_dir() -> Path:
    """Where the graphs the fast path runs are cached: ``facepcl_home()/encoders``."""
    return facepcl_home() / "encoders"


def encoder_onnx(model: nn.Module, crop_size: int, digest: str | None = None) -> Path:
    """The float32 ONNX graph of ``model``'s encoder, exported (and checked) on first use.

    Args:
        model: A :class:`~facepcl.PCLModel` or its encoder.
        crop_size: The input side S (the graph takes ``(B, 3, S, S)``, any batch B).
        digest: ``encoder_sha256`` of the model when already known.

    Returns:
        ``facepcl_home()/encoders/<sha256[:16]>-<S>px-fp32-<format>.onnx``.
    """
    encoder = getattr(model, "encoder", model)
    digest = digest or encoder_digest(encoder)
    path = encoders_dir() / f"{digest[:16]}-{int(crop_size)}px-fp32-{ENCODER_FORMAT}.onnx"
    with _LOCK:
        if not path.is_file():
            export_encoder(encoder, path, crop_size)
    return path


class OrtEncoder:
    """Runs an encoder graph on ONNX Runtime's CPU provider; returns ``PCLFeatures`` of float32 torch tensors.

    Args:
        path: An encoder ``.onnx`` file (input ``pixels``; outputs face, pose, trunk).
    """

    def __init__(self, path: Path) -> None:
        open_session(self, path)

    def __call__(self, x: torch.Tensor):
        """Encode ``(B, 3, S, S)`` float network input (any memory format, on the CPU)."""
        from ..model import PCLFeatures

        pixels = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        outputs = self.session.run(None, {"pixels": pixels})  # in FEATURES order, as the graph declares them
        return PCLFeatures(**{k: torch.from_numpy(o) for k, o in zip(FEATURES, outputs, strict=True)})


__all__ = ["ATOL", "OPSET", "EncoderGraph", "OrtEncoder", "check_graph", "encoder_onnx", "encoders_dir",
           "export_encoder", "export_graph", "float32_copy", "open_session", "session_options", "track_session"]
