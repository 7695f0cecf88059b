"""The encoder (and any task heads) as ONNX, for ONNX Runtime, TensorRT, OpenVINO or a browser.

:func:`export_onnx` writes a folder that needs nothing of facepcl to run::

    DIR/encoder.onnx      input "pixels" (B, 3, S, S) float32, the encoder's input (see config.json);
                          outputs "face", "pose", "trunk", each (B, D) float32; B is dynamic
    DIR/head-NAME.onnx    one per task head: input "features" (B, in_dim) -> output "outputs" (B, out_dim)
    DIR/config.json       the model's config (crop size, template, value range, mean/std, colour order,
                          interpolation, border) plus an "onnx" section naming the files, inputs and outputs
    DIR/README.md         how to align a face and run the encoder with numpy, OpenCV and onnxruntime

Every file is checked before the folder is complete: ONNX Runtime's outputs
must match the exact PyTorch path (float32, eager) within ``atol`` on a batch
of inputs, or the export fails. The folder is written under a lock and each
file is committed atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._utils.atomic import atomic_write
from ._utils.constants import FEATURES
from ._utils.digest import encoder_digest
from ._utils.folders import FolderLock
from .errors import OutputError
from .model import PCLModel
from .runtime._onnx import ATOL, OPSET, check_graph, export_encoder, export_graph, float32_copy

ENCODER_FILE = "encoder.onnx"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"


class _Head(nn.Module):
    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.net = head.net

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def export_onnx(model: PCLModel, out_dir: str | os.PathLike, *, overwrite: bool = False, opset: int = OPSET,
                atol: float = ATOL) -> Path:
    """Write the model's encoder and attached task heads as ONNX, with the preprocessing, into ``out_dir``.

    Args:
        model: A loaded :class:`~facepcl.PCLModel` (heads attached with
            ``facepcl.load(..., head=...)`` are exported too). It is not changed.
        out_dir: Folder to create; it must not exist or be empty, unless ``overwrite``.
        overwrite: Replace the ONNX folder that is there.
        opset: ONNX opset of the graphs.
        atol: Largest absolute difference allowed between ONNX Runtime's outputs
            and the exact PyTorch path on the check batch.

    Returns:
        The folder.

    Raises:
        OutputError: ``out_dir`` exists with other files (and not ``overwrite``),
            cannot be written, or another process is writing it.
        RuntimeError: ONNX Runtime's outputs differ from PyTorch's by more than ``atol``.
    """
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} is a file; choose a folder for the ONNX model")
    with FolderLock(out, "ONNX model"):
        existing = [p.name for p in out.iterdir() if not p.name.startswith(".")]
        if existing and not overwrite:
            raise OutputError(f"{out} already holds files ({', '.join(sorted(existing)[:5])}); pass overwrite=True "
                              "(facepcl onnx --overwrite) to replace them, or choose a new folder")
        for name in existing:
            if name.endswith(".onnx") or name in (CONFIG_FILE, CARD_FILE):
                (out / name).unlink()
        config = model.config
        size = config.preprocess.crop_size
        export_encoder(model.encoder, out / ENCODER_FILE, size, opset=opset, atol=atol)
        rng = torch.Generator().manual_seed(1)
        heads: dict[str, Any] = {}
        for name, head in (getattr(model, "task_heads", None) or {}).items():
            spec = head.spec
            net = _Head(float32_copy(head)).eval()
            x = torch.randn(3, spec.in_dim, generator=rng)
            path = out / f"head-{name}.onnx"
            export_graph(net, (x[:1],), path, ["features"], ["outputs"], opset)
            with torch.no_grad():
                check_graph(path, {"features": x.numpy()}, [net(x).numpy()], atol)
            heads[name] = {"file": path.name, "task": spec.task, "features": list(spec.features),
                           "input_size": spec.input_size, "interpolation": spec.interpolation,
                           "in_dim": spec.in_dim, "out_dim": spec.out_dim,
                           "labels": list(getattr(spec, "labels", None) or [])}
        meta = config.to_dict()
        meta["onnx"] = {"encoder": {"file": ENCODER_FILE, "input": "pixels", "input_shape": ["batch", 3, size, size],
                                    "outputs": list(FEATURES), "feature_dim": config.feature_dim},
                        "heads": heads, "opset": opset, "encoder_sha256": encoder_digest(model),
                        "checked_atol": atol}
        text = json.dumps(meta, indent=2) + "\n"
        atomic_write(out / CONFIG_FILE, lambda p: Path(p).write_text(text, encoding="utf-8"))
        card = model_card(meta)
        atomic_write(out / CARD_FILE, lambda p: Path(p).write_text(card, encoding="utf-8"))
    return out


def model_card(meta: dict[str, Any]) -> str:
    """The README of an ONNX folder: what is inside and how to use it without facepcl."""
    pre = meta["preprocess"]
    onnx_meta = meta["onnx"]
    size = pre["crop_size"]
    lines = [
        "---",
        f"license: {meta.get('license') or 'other'}",
        "library_name: onnx",
        "tags: [face, embedding, pcl, onnx]",
        "---",
        "",
        f"# {meta.get('name') or 'PCL'} encoder (ONNX)",
        "",
        "Face (pose-unrelated), pose and trunk embeddings of the PCL network (Liu et al., CVPR 2023), exported "
        "by facepcl. Runs in ONNX Runtime (or any ONNX runtime) without facepcl or PyTorch.",
        "",
        f"- `{onnx_meta['encoder']['file']}`: input `pixels`, float32 `(B, 3, {size}, {size})`; outputs "
        f"`face`, `pose`, `trunk`, each float32 `(B, {onnx_meta['encoder']['feature_dim']})`; B is free.",
    ]
    for name, h in onnx_meta["heads"].items():
        lines.append(f"- `{h['file']}`: task head `{name}` ({h['task']}): input `features` = "
                     f"{'+'.join(h['features'])} at {h['input_size']} px, `(B, {h['in_dim']})`; output `outputs` "
                     f"`(B, {h['out_dim']})`.")
    mean = "none" if pre["mean"] is None else pre["mean"]
    std = "none" if pre["std"] is None else pre["std"]
    lines += [
        "",
        "## Input",
        "",
        "1. Detect five landmarks (left eye, right eye, nose tip, left and right mouth corner; image left/right) "
        "with any detector (facepcl uses RetinaFace).",
        f"2. Align: the similarity transform (rotation, uniform scale, translation; least squares, Umeyama) that "
        f"maps the five landmarks onto the template `{pre['template']}` (pixel centres at integer coordinates), "
        f"then warp to {size} x {size} with {pre['interpolation']} interpolation and a {pre['border']} border "
        "(OpenCV's `warpAffine`).",
        f"3. Channels {pre['color_order']}, values scaled linearly from [0, 255] to {pre['value_range']}, minus "
        f"mean {mean}, divided by std {std}; layout `(3, {size}, {size})`, float32.",
        "",
        "## Example",
        "",
        "```python",
        "import cv2, json, numpy as np, onnxruntime as ort",
        "",
        "cfg = json.load(open('config.json'))",
        "pre = cfg['preprocess']",
        "session = ort.InferenceSession('encoder.onnx')",
        "",
        "def embed(rgb, landmarks):  # rgb: (H, W, 3) uint8; landmarks: (5, 2) in image pixels",
        "    m, _ = cv2.estimateAffinePartial2D(np.float32(landmarks), np.float32(pre['template']), method=cv2.LMEDS)",
        "    crop = cv2.warpAffine(rgb, m, (pre['crop_size'],) * 2, flags=cv2.INTER_LINEAR)",
        "    lo, hi = pre['value_range']",
        "    x = crop.astype(np.float32) / 255.0 * (hi - lo) + lo",
        "    if pre['mean'] is not None:",
        "        x = (x - np.float32(pre['mean'])) / np.float32(pre['std'])",
        "    face, pose, trunk = session.run(None, {'pixels': x.transpose(2, 0, 1)[None]})",
        "    return face[0] / np.linalg.norm(face[0]), pose[0], trunk[0]",
        "```",
        "",
        "`cv2.estimateAffinePartial2D` is a close stand-in for facepcl's least-squares fit; facepcl's own pipeline "
        "(`facepcl.embed`) gives the reference codes.",
        "",
        f"Checked at export: ONNX Runtime's outputs within {onnx_meta['checked_atol']:g} of PyTorch's float32 "
        f"encoder. Encoder weights: sha256 `{onnx_meta['encoder_sha256']}`.",
        "",
    ]
    return "\n".join(lines)


__all__ = ["export_onnx", "model_card"]
