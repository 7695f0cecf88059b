"""An int8 encoder for CPUs without native bf16: static quantisation calibrated on real aligned faces, gated.

What a model folder carries (:data:`INT8_FILE`, ``int8.json``, written by
:func:`calibrate_int8` through ``tools/calibrate_int8.py``) are derived
numbers only, never faces: the activation range of every quantised tensor
(min-max over the calibration faces), the layers left in float32, the
encoder's ``encoder_sha256`` they belong to and the faithfulness figures
measured on held-out faces. The int8 graph itself is built from them at first
use (:func:`int8_onnx`) into ``facepcl_home()/encoders``.

The quantisation (ONNX Runtime, QDQ format): per-channel symmetric int8
weights in 7 bits (``reduce_range``: CPUs without VNNI multiply uint8 by int8
in 16-bit sums, which 8-bit weights can saturate; 7-bit ones cannot, so the
figures measured here hold on any x86 CPU), per-tensor asymmetric uint8
activations, convolutions and matrix products quantised. Layers are kept in
float32, most error per multiply-add first (each one's error measured alone on
validation faces; cheap, sensitive layers go first), until the validation faces keep every code within
:data:`GATE` + :data:`MARGIN` cosine of the exact path. The calibration
passes (:attr:`Int8Calibration.passed`) only when faces used neither for the
ranges nor for that choice keep every code (face, pose, trunk) within
:data:`GATE` cosine of the exact float32 encoder and every face keeps its
nearest neighbour; the fast path uses an int8 encoder only then, and only for
the encoder whose digest the file names (:func:`check_calibration`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._utils.atomic import atomic_write
from .._utils.constants import FEATURES
from .._utils.digest import encoder_digest
from ._onnx import encoder_onnx, encoders_dir, float32_copy

#: The calibration file of a model folder.
INT8_FILE = "int8.json"
#: Bump when the file's meaning or the quantisation settings change (old files are then refused).
FORMAT = 1
#: Smallest cosine similarity to the exact path every code of every held-out face must keep.
GATE = 0.995
#: Extra cosine the validation faces must keep when choosing the layers left in float32.
MARGIN = 0.003
#: Operator types that are quantised.
OP_TYPES = ("Conv", "MatMul")
#: The quantisation, recorded in the file (a file with other settings is refused).
SETTINGS = {"format": "QDQ", "weights": "int8 per-channel symmetric, reduce_range (7 bit)",
            "activations": "uint8 per-tensor asymmetric", "calibration": "minmax", "op_types": list(OP_TYPES)}
_LOCK = threading.Lock()


class StaleCalibrationError(ValueError):
    """An int8 calibration does not belong to this encoder (another ``encoder_sha256``, crop size or format)."""


@dataclass(frozen=True)
class Int8Calibration:
    """The content of ``int8.json``: everything needed to build the int8 encoder, and how faithful it is.

    Attributes:
        encoder_sha256: The encoder the ranges were measured on.
        crop_size: Input side S the calibration faces had.
        ranges: Activation range ``[low, high]`` of each quantised tensor, by ONNX tensor name.
        float_layers: ONNX node names left in float32, most sensitive first.
        heldout: Faithfulness on held-out faces: ``faces``, ``min_cosine`` and
            ``mean_cosine`` per code, ``neighbour_faces`` and ``nearest_neighbour_kept``.
        validation: The same figures on the faces that chose :attr:`float_layers`.
        sources: Where the faces came from and how many there were in each role.
        settings: The quantisation (:data:`SETTINGS`).
        format: :data:`FORMAT`.
        versions: Library versions that computed it.
    """

    encoder_sha256: str
    crop_size: int
    ranges: dict[str, list[float]]
    float_layers: list[str]
    heldout: dict[str, Any]
    validation: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=lambda: dict(SETTINGS))
    format: int = FORMAT
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether held-out faces kept every code within :data:`GATE` and every nearest neighbour."""
        cos = self.heldout.get("min_cosine") or {}
        return (all(float(cos.get(k, -1.0)) >= GATE for k in FEATURES)
                and bool(self.heldout.get("nearest_neighbour_kept")))

    def digest(self) -> str:
        """SHA-256 of what builds the graph (encoder, ranges, float layers, settings, format)."""
        core = {"encoder_sha256": self.encoder_sha256, "ranges": self.ranges, "float_layers": self.float_layers,
                "settings": self.settings, "format": self.format}
        return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Write the calibration as JSON, atomically."""
        text = json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True) + "\n"
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Int8Calibration:
        """Read ``int8.json``.

        Raises:
            StaleCalibrationError: The file is damaged or of another format.
        """
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            names = {f.name for f in dataclasses.fields(cls)}
            calibration = cls(**{k: v for k, v in raw.items() if k in names})
        except (OSError, ValueError, TypeError) as e:
            raise StaleCalibrationError(f"{path}: not a readable int8 calibration ({type(e).__name__}: {e}); "
                                        "recalibrate (tools/calibrate_int8.py) or delete it") from None
        if calibration.format != FORMAT or calibration.settings != SETTINGS:
            raise StaleCalibrationError(f"{path}: an int8 calibration of format {calibration.format} with settings "
                                        f"{calibration.settings}; this facepcl builds format {FORMAT} with "
                                        f"{SETTINGS}: recalibrate (tools/calibrate_int8.py)")
        return calibration


def model_calibration(model: nn.Module) -> tuple[Int8Calibration | None, Path | None]:
    """The int8 calibration in the folder ``model`` was loaded from (``model.provenance["folder"]``).

    Returns:
        ``(calibration, path)``; ``(None, path or None)`` when the model has no folder or no file there.

    Raises:
        StaleCalibrationError: The file is damaged or of another format.
    """
    folder = (getattr(model, "provenance", None) or {}).get("folder")
    if not folder:
        return None, None
    path = Path(folder) / INT8_FILE
    if not path.is_file():
        return None, path
    return Int8Calibration.load(path), path


def check_calibration(calibration: Int8Calibration, digest: str, crop_size: int, where: str) -> None:
    """Refuse a calibration made for another encoder or crop size.

    Raises:
        StaleCalibrationError: Naming ``where``, both digests (or sizes) and the fix.
    """
    if calibration.encoder_sha256 != digest:
        raise StaleCalibrationError(
            f"{where}: the int8 calibration was made for the encoder with encoder_sha256 "
            f"{calibration.encoder_sha256[:16]}..., but this encoder's is {digest[:16]}... (changed weights): its "
            "activation ranges do not apply; recalibrate (tools/calibrate_int8.py) or use another encoder_runtime")
    if calibration.crop_size != crop_size:
        raise StaleCalibrationError(
            f"{where}: the int8 calibration was made at {calibration.crop_size} px crops, this embedder uses "
            f"{crop_size} px; use crop_size={calibration.crop_size} or another encoder_runtime")


def _tensors_data(ranges: Mapping[str, Sequence[float]]):
    from onnxruntime.quantization import CalibrationMethod, TensorsData

    return TensorsData(CalibrationMethod.MinMax, {k: (np.array(lo, np.float32), np.array(hi, np.float32))
                                                  for k, (lo, hi) in ranges.items()})


def _quantize(fp32: Path, out: Path, ranges: Mapping[str, Sequence[float]], float_layers: Sequence[str],
              only: Sequence[str] | None = None) -> None:
    """Write the QDQ int8 graph of ``fp32`` with these activation ranges (no calibration data needed)."""
    import inspect

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise RuntimeError("this onnxruntime cannot quantise from stored activation ranges (its quantize_static "
                           "has no calibration_cache_path); upgrade onnxruntime for the int8 encoder")
    with tempfile.TemporaryDirectory(prefix="facepcl-int8-") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(_tensors_data(ranges), cache)
        quantize_static(str(fp32), str(out), None, calibration_cache_path=str(cache),
                        quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(OP_TYPES), nodes_to_quantize=list(only) if only else None,
                        nodes_to_exclude=list(float_layers), calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})


def _graph_tensors(path: Path) -> set[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {i.name for i in graph.input} | {o for n in graph.node for o in n.output}


def int8_onnx(model: nn.Module, calibration: Int8Calibration, digest: str | None = None) -> Path:
    """The int8 encoder graph of ``model`` built from ``calibration``, on first use, cached.

    Args:
        model: A :class:`~facepcl.PCLModel` (or its encoder).
        calibration: Its calibration (:func:`check_calibration` is applied).
        digest: ``encoder_sha256`` of the model when already known.

    Returns:
        ``facepcl_home()/encoders/<sha256[:16]>-<S>px-int8-<calibration digest[:16]>.onnx``.

    Raises:
        StaleCalibrationError: The calibration is for another encoder, or names
            tensors the exported graph does not have.
    """
    digest = digest or encoder_digest(getattr(model, "encoder", model))
    check_calibration(calibration, digest, calibration.crop_size, "int8 encoder")
    path = encoders_dir() / f"{digest[:16]}-{calibration.crop_size}px-int8-{calibration.digest()[:16]}.onnx"
    with _LOCK:
        if path.is_file():
            return path
        fp32 = encoder_onnx(model, calibration.crop_size, digest)  # what it is quantised from: only when needed
        missing = sorted(set(calibration.ranges) - _graph_tensors(fp32))
        if missing:
            raise StaleCalibrationError(f"the int8 calibration names tensors the exported encoder graph does not "
                                        f"have ({missing[:3]}...): this torch exports another graph; recalibrate "
                                        "(tools/calibrate_int8.py)")
        atomic_write(path, lambda tmp: _quantize(fp32, Path(tmp), calibration.ranges, calibration.float_layers))
    return path


# -- calibration ----------------------------------------------------------------------------------------------


def faithfulness(exact: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> dict[str, Any]:
    """How close codes are to the exact ones: per-code min and mean cosine, and nearest neighbours kept.

    Args:
        exact: face, pose, trunk ``(N, D)`` of the exact path.
        got: The same from the path under test.

    Returns:
        ``{"faces", "min_cosine": {code: float}, "mean_cosine": {...},
        "neighbour_faces", "nearest_neighbour_kept"}``: a face keeps its
        nearest neighbour when the other face whose face code is most similar
        to its own is the same in both.
    """
    out: dict[str, Any] = {"faces": len(exact[0]), "min_cosine": {}, "mean_cosine": {}}
    for name, a, b in zip(FEATURES, exact, got, strict=True):
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        out["min_cosine"][name] = round(float(cos.min()), 5)
        out["mean_cosine"][name] = round(float(cos.mean()), 5)
    out["neighbour_faces"] = len(exact[0])
    out["nearest_neighbour_kept"] = bool(len(exact[0]) < 2 or np.array_equal(_nearest(exact[0]), _nearest(got[0])))
    return out


def _nearest(face: np.ndarray) -> np.ndarray:
    unit = face / np.maximum(np.linalg.norm(face, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(1)


def _run(path: Path, pixels: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = [session.run(None, {"pixels": pixels[i:i + 64]}) for i in range(0, len(pixels), 64)]
    return [np.concatenate([o[k] for o in outs]) for k in range(len(FEATURES))]


def _worst(report: Mapping[str, Any]) -> float:
    return min(report["min_cosine"].values())


def calibrate_int8(model: nn.Module, calibration: np.ndarray, validation: np.ndarray, heldout: np.ndarray, *,
                   sources: Mapping[str, Any] | None = None, log: Callable[[str], None] = lambda s: None
                   ) -> Int8Calibration:
    """Calibrate the int8 encoder of ``model`` on real aligned faces and measure it on others.

    Args:
        model: A :class:`~facepcl.PCLModel` (float32).
        calibration: ``(N, 3, S, S)`` float32 encoder input of the faces that set the activation ranges.
        validation: Encoder input of other faces, which choose the layers left in float32.
        heldout: Encoder input of faces used for neither: the figures the gate reads.
        sources: Where the faces came from (recorded in the file).
        log: Progress messages.

    Returns:
        The calibration; :attr:`Int8Calibration.passed` says whether the fast path may use it.
    """
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator

    encoder = getattr(model, "encoder", model)
    digest = encoder_digest(encoder)
    size = int(calibration.shape[-1])
    fp32 = encoder_onnx(model, size, digest)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            batch = 32  # equal batches: every collected array has the same shape
            self.batches = iter([{"pixels": calibration[i:i + batch]}
                                 for i in range(0, len(calibration) - batch + 1, batch)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="facepcl-int8-") as tmp:
        calibrator = create_calibrator(fp32, list(OP_TYPES), augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.MinMax)
        calibrator.collect_data(Reader())
        data = calibrator.compute_data()
        ranges = {k: [float(np.min(v.range_value[0])), float(np.max(v.range_value[1]))]
                  for k, v in data.data.items()}
        del calibrator
        log(f"activation ranges of {len(ranges)} tensors from {len(calibration)} faces")
        with torch.no_grad():
            exact = {name: [t.float().numpy() for t in _exact(encoder, x)]
                     for name, x in (("validation", validation), ("heldout", heldout))}

        def trial(float_layers: Sequence[str], only: Sequence[str] | None = None, on: str = "validation"):
            out = Path(tmp) / "trial.onnx"
            _quantize(fp32, out, ranges, float_layers, only)
            return faithfulness(exact[on], _run(out, validation if on == "validation" else heldout))

        cost = _macs(fp32, size)
        sensitivity = {}
        for name in cost:  # the error each layer causes alone
            sensitivity[name] = 1.0 - _worst(trial([], only=[name]))
            log(f"  {name}: {sensitivity[name]:.5f} ({cost[name] / 1e6:.1f} M multiply-adds)")
        # most error per multiply-add first: cheap, sensitive layers go back to float32 before costly ones
        order = sorted(cost, key=lambda n: -sensitivity[n] / cost[n])
        float_layers: list[str] = []
        for k in range(len(order) + 1):
            float_layers = order[:k]
            val = trial(float_layers)
            log(f"{k} layers in float32: validation min cosine {val['min_cosine']}")
            if _worst(val) >= GATE + MARGIN:
                break
        held = trial(float_layers, on="heldout")
        log(f"held-out faces: {held}")
    return Int8Calibration(encoder_sha256=digest, crop_size=size, ranges=ranges, float_layers=list(float_layers),
                           heldout=held, validation=val, sources=dict(sources or {}), versions=_versions())


def _macs(path: Path, size: int) -> dict[str, float]:
    """Multiply-adds per face of every quantisable node of the graph at ``size`` px (matrix products: their
    output size times the shared dimension)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]}
    weights = {t.name: numpy_helper.to_array(t).shape for t in model.graph.initializer}
    out: dict[str, float] = {}
    for node in model.graph.node:
        if node.op_type not in OP_TYPES:
            continue
        y = shapes.get(node.output[0]) or [1]
        if node.op_type == "Conv":
            w = weights[node.input[1]]
            out[node.name] = float(np.prod(y[1:]) * np.prod(w[1:]))
        else:
            a = shapes.get(node.input[0]) or [1]
            out[node.name] = float(np.prod(y[1:]) * max(a[-1], 1))
        out[node.name] = max(out[node.name], 1.0)
    return out


def _exact(encoder: nn.Module, x: np.ndarray) -> list[torch.Tensor]:
    net = float32_copy(encoder).eval()
    outs = [net(torch.from_numpy(x[i:i + 64])) for i in range(0, len(x), 64)]
    return [torch.cat([getattr(o, k).flatten(1) for o in outs]) for k in FEATURES]


def _versions() -> dict[str, str]:
    import onnxruntime as ort

    from .._utils.version import __version__

    return {"facepcl": __version__, "onnxruntime": ort.__version__, "torch": torch.__version__.split("+")[0]}


__all__ = ["FORMAT", "GATE", "INT8_FILE", "MARGIN", "Int8Calibration", "StaleCalibrationError", "calibrate_int8",
           "check_calibration", "faithfulness", "int8_onnx", "model_calibration"]
