"""The one place where ``facepcl embed`` calls the embedding pipeline (:class:`facepcl.FaceEmbedder`).

The bulk runner decodes in its own worker threads (``FaceEmbedder.load``) and
hands decoded images to ``FaceEmbedder.embed_loaded`` (detect, align,
encode). Everything the output files record about the model and the
preprocessing is gathered here too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._utils.digest import encoder_digest
from ._writers import FEATURES


@dataclasses.dataclass
class BatchFaces:
    """The faces of one batch of decoded images.

    Attributes:
        image_index: ``(N,)`` position in the batch of each face's image (ascending).
        bbox: ``(N, 4)`` float32 x1, y1, x2, y2 in image pixels.
        kps: ``(N, 5, 2)`` float32 landmarks (NaN without detection).
        det_score: ``(N,)`` float32 (NaN without detection).
        features: ``{"face"|"pose"|"trunk": (N, D) float32}`` for the chosen features.
        no_face: Batch positions of images in which no face was found and that were skipped.
    """

    image_index: np.ndarray
    bbox: np.ndarray
    kps: np.ndarray
    det_score: np.ndarray
    features: dict[str, np.ndarray]
    no_face: list[int]


class Embedder:
    """Model plus face pipeline, configured from the command line's options.

    Args:
        model: ``facepcl.load`` name, Hub id or folder (None: the default model).
        revision: Hub revision to pin.
        device: Torch device (None: CUDA if available, else CPU).
        dtype: Encoder compute dtype ("float32", "bf16", "fp16"); None: float32, or with ``fast`` bf16 where native.
        compile: ``torch.compile`` the encoder.
        fast: The fast path (None: the default, fast; False: exact; see :class:`facepcl.FaceEmbedder`).
        detector_dtype: Detector compute dtype (None: float32; "bf16" moves landmarks by up to a pixel).
        detect: False for inputs that are already aligned face crops.
        max_faces: Keep at most this many faces per image (highest scores first).
        on_no_face: "skip", "full_image" or "error".
        det_threshold: Detector score threshold (None: the model config's).
        min_face_size: Ignore faces smaller than this many pixels.
        batch_size: Crops per encoder forward (the detector batches as :class:`FaceDetector` does by default).
        features: Which features to keep.
    """

    def __init__(self, model: str | None, *, revision: str | None = None, device: str | None = None,
                 dtype: str | None = None, compile: bool = False, fast: bool | None = None,
                 detector_dtype: str | None = None, detect: bool = True, max_faces: int | None = None,
                 on_no_face: str = "skip", det_threshold: float | None = None, min_face_size: float = 0.0,
                 batch_size: int = 32, features: Sequence[str] = FEATURES) -> None:
        from .. import hub
        from .._utils.device import resolve_device
        from ..errors import ModelLoadError
        from ..pipeline import FaceEmbedder

        self.features = [f for f in FEATURES if f in features]
        try:
            resolve_device(device)
        except RuntimeError as e:  # asking for a device that is not there is a usage error, not a crash
            raise ValueError(f"--device: {e}") from None
        try:
            loaded = hub.load(model, revision=revision, device=device)
        except ModelLoadError as e:
            if model is not None:
                raise
            raise ModelLoadError(f"no --model was given, and the default model {hub.default_model_name()!r} cannot "
                                 f"be loaded ({e}). Pass --model NAME|HUB_ID|FOLDER or set FACEPCL_MODEL") from e
        self.embedder = FaceEmbedder(
            loaded, dtype=dtype, compile=compile, fast=fast, detector_dtype=detector_dtype if detect else None,
            detect=detect, max_faces=max_faces, on_no_face=on_no_face, det_threshold=det_threshold,
            min_face_size=min_face_size, batch_size=batch_size)
        self.detect = detect
        self.on_no_face = on_no_face
        self.max_faces = max_faces
        self.dim = self.embedder.dim
        if detect:
            self.embedder.detector  # noqa: B018 (build it now: a missing detector is a start-up error)

    def load(self, path: str) -> np.ndarray:
        """Decode one image file (runs in worker threads)."""
        return self.embedder.load(path)

    def prepare(self, image: np.ndarray) -> Any:
        """The per-image part of detection (runs in worker threads; see ``FaceEmbedder.prepare``)."""
        return self.embedder.prepare(image)

    def __call__(self, images: Sequence[np.ndarray], names: Sequence[str],
                 prepared: Sequence[Any] | None = None) -> BatchFaces:
        """Detect, align and encode decoded images (``prepared``: :meth:`prepare` of each, if done already).

        Raises:
            NoFaceError: ``on_no_face="error"`` and an image has no face.
        """
        ready = prepared if self.detect and prepared is not None and all(p is not None for p in prepared) else None
        result = self.embedder.embed_loaded(images, names=names, prepared=ready)
        order = np.argsort(result.image_index, kind="stable")  # faces grouped by image, in image order
        no_face = [] if self.on_no_face == "full_image" else sorted(result.no_face)
        return BatchFaces(result.image_index[order], result.bbox[order], result.kps[order],
                          result.det_score[order], {f: getattr(result, f)[order] for f in self.features},
                          no_face)

    def metadata(self) -> dict[str, Any]:
        """Provenance stored in every shard: model, weights, preprocessing, detector, facepcl version."""
        emb = self.embedder
        config = emb.model.config
        info = emb.info()
        det = None
        if self.detect:
            d = emb.detector
            det = {"name": d.name, "det_threshold": d.det_threshold, "nms_threshold": d.nms_threshold,
                   "max_size": d.max_size, "min_face_size": d.min_face_size, "max_faces": d.max_faces,
                   "dtype": str(d.plan.dtype).removeprefix("torch."), "canvas_step": d.canvas_step}
        return {
            "format_version": 1,
            "model_id": info.get("model_id"), "revision": info.get("revision"),
            "config_hash": info.get("config_hash"), "encoder_sha256": encoder_digest(emb.model),
            "model_name": config.name, "model_license": config.license,
            "facepcl_version": info.get("facepcl_version"),
            "preprocess": dataclasses.asdict(emb.preprocess), "crop_size": emb.crop_size,
            "input_size": config.input_size, "feature_dim": self.dim, "features": self.features,
            "dtype": info.get("dtype"), "accel": info.get("accel"), "detect": self.detect, "detector": det,
            "decode": info.get("decode"),
            "on_no_face": self.on_no_face, "max_faces": self.max_faces,
        }
