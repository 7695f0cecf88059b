"""Batched RetinaFace face detection on images of any sizes."""

from __future__ import annotations

import inspect
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from .._utils.device import resolve_device
from ..config import DetectorConfig
from ..io import load_image
from ..runtime._accel import Plan, check_mode, detector_plan, flip_input_channels, prepare_detector_net
from . import _retinaface
from ._network import nms
from ._types import Detections, Prepared

SORT_KEYS = ("score", "size")
RUNTIMES = ("torch", "onnxruntime")
#: Options that decide where and how quickly detection runs, not which faces it finds
#: (left out of :meth:`FaceDetector.settings`).
RUN_ONLY = ("device", "batch_size", "download")
#: The second pass looks at a region this many times the weak candidate's box side (centred on it).
RESCUE_CONTEXT = 3.0


class FaceDetector:
    """RetinaFace detector that batches images of different sizes.

    Each image is shrunk (never enlarged) so that its longer side is at most
    ``max_size``, with area averaging, and padded at the right and bottom to
    a canvas whose sides are multiples of 32 pixels (the network's stride;
    ``canvas_step``). Images sharing a canvas shape go through the network
    together; decoded boxes and landmarks are mapped back to the original
    pixels. Because an image's canvas depends only on its own size, its
    detections are the same whichever images share its batch.

    Args:
        name: "retinaface_mobile0.25" (default; weights ship with facepcl, no
            download ever) or "retinaface_resnet50" (facexlib's release file,
            downloaded once into ``facepcl_home()/detectors``, or ``weights=``).
        weights: Local weights file (``.safetensors`` or ``.pth``) instead of the default.
        device: Torch device (None: CUDA if available, else CPU).
        mode: "exact" (default): the network as published, float32, eager,
            NCHW, in torch. "fast": a copy with BatchNorm folded into the
            convolutions, channels_last, float32 (or the ``dtype`` given);
            the same detections to float rounding. On a CPU the fast float32
            network runs on ONNX Runtime unless ``runtime="torch"``. Other
            values: ValueError.
        dtype: Compute dtype. None/"float32" (default): float32. "bf16" (or
            "fp16" on CUDA): a copy with BatchNorm folded, channels_last, in
            that dtype, whatever the mode; it finds the same faces with boxes
            and landmarks within about a pixel (checked in the tests on real
            photos).
        canvas_step: Canvas sides are multiples of this many pixels (a
            multiple of 32; default 32, which pads least: a 512 x 512 photo
            is detected on 512 x 512). Larger steps let images of similar
            sizes share a batch, at the cost of padding.
        det_threshold: Minimum face score.
        nms_threshold: IoU above which a lower-scored box is suppressed.
        max_size: Longer image side, in pixels, that detection works at.
        min_face_size: Drop faces whose box's shorter side is below this many
            original pixels (0 keeps all).
        max_faces: Keep at most this many faces per image (after sorting).
        sort_by: "score" (default, highest first) or "size" (largest box area first).
        batch_size: Images per network forward. None: 1 for the exact
            float32 network on a CPU, else 8.
        download: Allow downloading weights that are not cached (resnet50 only).
        runtime: What runs the network: "torch", or "onnxruntime" (the fast
            float32 network only, CPU; exported once from these weights into
            ``facepcl_home()/detectors``, see :mod:`facepcl.detection._onnx`).
            None: onnxruntime for the fast float32 network on a CPU, torch
            otherwise.
        rescue_threshold: Second pass for faces that shrinking hid. In an
            image that was shrunk to ``max_size``, every candidate scoring
            between this and ``det_threshold`` (and not overlapping a
            found face) is detected again in a region of 3x its box around
            it, at up to twice ``max_size`` (full resolution for most
            photos); faces found there at ``det_threshold`` are added. It
            costs nothing on images without such candidates (docs/alignment.md).
            None: one pass only.

    Every argument is kept as the attribute of the same name (``dtype``
    and ``runtime`` as resolved); :meth:`settings` reports them.
    """

    def __init__(self, name: str = "retinaface_mobile0.25", *, weights: str | os.PathLike | None = None,
                 device: str | torch.device | None = None, mode: str = "exact",
                 dtype: str | torch.dtype | None = None, det_threshold: float = 0.8, nms_threshold: float = 0.4,
                 max_size: int = 640, min_face_size: float = 0.0, max_faces: int | None = None,
                 sort_by: str = "score", batch_size: int | None = None, download: bool = True,
                 canvas_step: int | None = None, runtime: str | None = None,
                 rescue_threshold: float | None = 0.2) -> None:
        _check_values(mode=mode, det_threshold=det_threshold, nms_threshold=nms_threshold, max_size=max_size,
                      max_faces=max_faces, sort_by=sort_by, batch_size=batch_size, runtime=runtime,
                      rescue_threshold=rescue_threshold, canvas_step=canvas_step)
        self.name = name
        self.weights = None if weights is None else os.fspath(weights)
        self.download = bool(download)
        self.mode = mode
        self.device = resolve_device(device)
        self.det_threshold = float(det_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_size = int(max_size)
        self.min_face_size = float(min_face_size)
        self.max_faces = max_faces
        self.sort_by = sort_by
        self.canvas_step = 32 if canvas_step is None else int(canvas_step)
        self.rescue_threshold = None if rescue_threshold is None else float(rescue_threshold)
        self.net = _retinaface.build(name, weights, download=download).to(self.device)
        self.plan: Plan = detector_plan(self.device, mode=mode, dtype=dtype)
        self.dtype = self.plan.dtype
        if batch_size is None:
            batch_size = 1 if self.plan.exact and self.device.type == "cpu" else 8
        self.batch_size = int(batch_size)
        self._run = prepare_detector_net(self.net, self.device, self.plan, keep_float32=_retinaface.HEADS)
        if not self.plan.exact:
            # The fast path feeds RGB (no channel flip per image): its copy's first convolution takes RGB instead.
            flip_input_channels(self._run)
        self.runtime = self._resolve_runtime(runtime)
        if self.runtime == "onnxruntime":
            from . import _onnx

            self._run = _onnx.OrtNetwork(_onnx.exported(name, self._run))
        self._mean = torch.tensor(_retinaface.BGR_MEAN, device=self.device).view(1, 3, 1, 1)

    def _resolve_runtime(self, runtime: str | None) -> str:
        ort_ok = not self.plan.exact and self.plan.dtype == torch.float32 and self.device.type == "cpu"
        if runtime is None:
            return "onnxruntime" if ort_ok else "torch"
        if runtime == "onnxruntime" and not ort_ok:
            raise ValueError("runtime='onnxruntime' runs the fast float32 network on a CPU only; pass mode='fast' "
                             "(without a reduced dtype) and a CPU device, or runtime='torch'")
        return runtime

    @classmethod
    def from_config(cls, config: DetectorConfig, **kwargs: Any) -> FaceDetector:
        """A detector with a model config's detector defaults; ``kwargs`` override them."""
        return cls(**{**config_defaults(config), **kwargs})

    @classmethod
    def options(cls) -> tuple[str, ...]:
        """The names of the keyword arguments this class takes (its options), in signature order."""
        return tuple(inspect.signature(cls).parameters)

    @classmethod
    def check_options(cls, options: dict[str, Any], where: str = "FaceDetector") -> None:
        """Check detector keyword arguments without building the network.

        Args:
            options: Keyword arguments for :class:`FaceDetector` (those left
                out take their defaults).
            where: What to name in the errors.

        Raises:
            TypeError: An option FaceDetector does not take (the error lists those it takes).
            ValueError: A bad value.
        """
        unknown = sorted(set(options) - set(cls.options()))
        if unknown:
            raise TypeError(f"{where}: unknown detector options {unknown}; FaceDetector takes {list(cls.options())}")
        bound = inspect.signature(cls).bind_partial(**options)
        bound.apply_defaults()
        values = bound.arguments
        _check_values(**{k: values[k] for k in inspect.signature(_check_values).parameters})

    def settings(self) -> dict[str, Any]:
        """The options that decide which faces are found, as JSON-ready values.

        Every constructor option but the run-only ones (:data:`RUN_ONLY`:
        device, batch size, download), read from the attribute of the same
        name, so a new option appears here without further edits.
        """
        return {name: _plain(getattr(self, name)) for name in self.options() if name not in RUN_ONLY}

    def __repr__(self) -> str:
        dtype = "" if self.plan.exact else (f", mode={self.mode!r}, dtype={_plain(self.plan.dtype)!r}, "
                                            f"runtime={self.runtime!r}")
        if self.canvas_step != 32:
            dtype += f", canvas_step={self.canvas_step}"
        return (f"FaceDetector({self.name!r}, device={str(self.device)!r}, det_threshold={self.det_threshold}, "
                f"nms_threshold={self.nms_threshold}, max_size={self.max_size}{dtype})")

    def detect(self, image: Any) -> Detections:
        """Detect the faces of one image.

        Args:
            image: Anything :func:`facepcl.io.load_image` accepts; usually an
                ``(H, W, 3)`` uint8 RGB array.

        Returns:
            :class:`Detections` in original pixels.
        """
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[Any]) -> list[Detections]:
        """Detect the faces of several images of any sizes, in batches.

        Args:
            images: Images (``(H, W, 3)`` uint8 RGB arrays, or anything
                :func:`facepcl.io.load_image` accepts, which raises on bad input).

        Returns:
            One :class:`Detections` per image, in order.
        """
        return self.detect_prepared([self.prepare(load_image(im)) for im in images])

    def prepare(self, image: np.ndarray) -> Prepared:
        """Resize one image for the network (the CPU-heavy part of detection before the network; thread-safe).

        Bulk tools call this from worker threads, then hand the results to
        :meth:`detect_prepared` in batches.

        Args:
            image: ``(H, W, 3)`` uint8 RGB array (see :func:`facepcl.io.load_image`).

        Returns:
            A :class:`Prepared`.
        """
        return self._prepare(image, self.max_size, keep_source=self.rescue_threshold is not None)

    def _prepare(self, image: np.ndarray, max_size: int, keep_source: bool = False) -> Prepared:
        h, w = image.shape[:2]
        s = min(1.0, max_size / max(h, w))
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        small = image if (nw, nh) == (w, h) else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        q = self.canvas_step
        canvas = (q * math.ceil(nh / q), q * math.ceil(nw / q))
        shrunk = (nw, nh) != (w, h)
        return Prepared(small, (nw / w, nh / h), canvas, (h, w), image if keep_source and shrunk else None)

    def detect_prepared(self, prepared: Sequence[Prepared]) -> list[Detections]:
        """Detect the faces of prepared images (from :meth:`prepare`), batching images of equal canvas.

        Returns:
            One :class:`Detections` per image, in order, in original pixels.
        """
        found = self._detect(prepared)
        weak = self.rescue_threshold is not None and self.rescue_threshold < self.det_threshold
        for i, (p, det) in enumerate(zip(prepared, found, strict=True)):
            strong = np.nonzero(det.scores > self.det_threshold)[0]
            if weak and p.source is not None and len(strong) < len(det):
                found[i] = self._rescue(p.source, _take(det, strong),
                                        _take(det, np.nonzero(det.scores <= self.det_threshold)[0]))
            else:
                found[i] = _take(det, strong)
        return [self._select(det) for det in found]

    def _rescue(self, image: np.ndarray, strong: Detections, weak: Detections) -> Detections:
        """Detect again around ``weak`` candidates at up to twice ``max_size``; add the faces found there."""
        h, w = image.shape[:2]
        regions, offsets, boxes = [], [], []
        for x1, y1, x2, y2 in weak.boxes:
            half = RESCUE_CONTEXT * max(x2 - x1, y2 - y1, 8.0) / 2
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
            xe, ye = min(w, math.ceil(cx + half)), min(h, math.ceil(cy + half))
            if xe - x0 < 2 or ye - y0 < 2:
                continue
            regions.append(self._prepare(image[y0:ye, x0:xe], 2 * self.max_size))
            offsets.append(np.array([x0, y0], np.float32))
            boxes.append((x1, y1, x2, y2))
        added = []
        for box, offset, det in zip(boxes, offsets, self._detect(regions), strict=True):
            det = _take(det, np.nonzero(det.scores > self.det_threshold)[0])
            det = Detections((det.boxes.reshape(-1, 2, 2) + offset).reshape(-1, 4), det.kps + offset, det.scores)
            # Only the face the candidate pointed at: its centre lies in the candidate's box.
            cx, cy = (det.boxes[:, 0] + det.boxes[:, 2]) / 2, (det.boxes[:, 1] + det.boxes[:, 3]) / 2
            inside = (cx >= box[0]) & (cx <= box[2]) & (cy >= box[1]) & (cy <= box[3])
            added.append(_take(det, np.nonzero(inside)[0]))
        if not any(len(d) for d in added):
            return strong
        merged = Detections(*(np.concatenate([getattr(d, f) for d in (strong, *added)])
                              for f in ("boxes", "kps", "scores")))
        keep = nms(torch.from_numpy(merged.boxes), torch.from_numpy(merged.scores), self.nms_threshold)
        return _take(merged, keep.numpy())

    def _detect(self, prepared: Sequence[Prepared]) -> list[Detections]:
        """Every candidate above the first-pass threshold, after NMS, in original pixels, by decreasing score."""
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, p in enumerate(prepared):
            groups[p.canvas].append(i)
        results: list[Detections | None] = [None] * len(prepared)
        for canvas, members in groups.items():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                outs = self._forward([prepared[i].image for i in chunk], canvas)
                for i, (boxes, kps, scores) in zip(chunk, outs, strict=True):
                    results[i] = self._to_original(boxes, kps, scores, prepared[i].scale)
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def _forward(self, images: list[np.ndarray], canvas: tuple[int, int]):
        hc, wc = canvas
        if self.plan.exact:
            batch = torch.zeros((len(images), 3, hc, wc), dtype=torch.float32, device=self.device)
            for b, im in enumerate(images):
                t = torch.from_numpy(np.ascontiguousarray(im[..., ::-1].transpose(2, 0, 1))).to(self.device)
                # Padding stays 0 after the mean is removed from the image part only: padding reads as mean grey.
                batch[b, :, :im.shape[0], :im.shape[1]] = t.float() - self._mean[0]
        else:
            batch = self._channels_last_batch(images, canvas)
        loc, conf, landmarks = self._run(batch)
        anchors = _retinaface.priors(hc, wc).to(self.device)
        scale = torch.tensor([wc, hc], dtype=torch.float32, device=self.device)
        scores = conf[..., 1].float()
        threshold = min(self.det_threshold, self.rescue_threshold or self.det_threshold)
        outs = []
        for b in range(len(images)):
            # Decoding is per anchor, so only the few anchors above the threshold (of tens of thousands) are decoded.
            keep = torch.nonzero(scores[b] > threshold).squeeze(1)
            bx, pt = _retinaface.decode(loc[b, keep].float(), landmarks[b, keep].float(), anchors[keep])
            bx, pt, sc = bx * scale.repeat(2), pt * scale, scores[b, keep]
            order = nms(bx, sc, self.nms_threshold)  # sorted by decreasing score
            outs.append((bx[order].cpu().numpy(), pt[order].cpu().numpy(), sc[order].cpu().numpy()))
        return outs

    def _channels_last_batch(self, images: list[np.ndarray], canvas: tuple[int, int]) -> torch.Tensor:
        """The fast path's input: RGB pixels minus the mean, padding 0, in an NHWC buffer of the compute dtype.

        The values are those of the exact path (in RGB order, which the fast
        network's first convolution expects): differences of 8-bit pixels
        and the integer means are small integers, exact in bfloat16 and
        float16. Two passes over the batch: one conversion per image, one
        subtraction for all (the padding is set to the mean first, so that it
        ends at 0).
        """
        hc, wc = canvas
        dtype = self.plan.dtype
        mean = self._mean.view(3).flip(0).to(dtype)  # RGB order
        batch = torch.empty((len(images), hc, wc, 3), dtype=dtype, device=self.device)
        for b, im in enumerate(images):
            h, w = im.shape[:2]
            batch[b, :h, :w].copy_(torch.from_numpy(np.require(im, requirements=("C", "W"))).to(self.device))
            batch[b, h:] = mean
            batch[b, :h, w:] = mean
        # One row of means (W*3 values) keeps the subtraction vectorised; a (3,) broadcast over an inner
        # dimension of 3 is an order of magnitude slower.
        batch.view(len(images), hc, wc * 3).sub_(mean.repeat(wc))
        return batch.permute(0, 3, 1, 2)  # (B, 3, H, W) in channels_last memory, no copy

    @staticmethod
    def _to_original(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray, scale: tuple[float, float]) -> Detections:
        sx, sy = scale
        if (sx, sy) != (1.0, 1.0):
            # Pixel centres at integers: resized pixel r came from original (r + 0.5) / s - 0.5.
            factor = np.array([sx, sy], dtype=np.float64)
            kps = (kps + 0.5) / factor - 0.5
            boxes = ((boxes.reshape(-1, 2, 2) + 0.5) / factor - 0.5).reshape(-1, 4)
        return Detections(boxes.astype(np.float32), kps.astype(np.float32), scores.astype(np.float32))

    def _select(self, det: Detections) -> Detections:
        """min_face_size, sort_by and max_faces."""
        if self.min_face_size > 0 and len(det):
            side = np.minimum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])
            det = _take(det, np.nonzero(side >= self.min_face_size)[0])
        if self.sort_by == "size" and len(det):
            area = (det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1])
            det = _take(det, np.argsort(-area, kind="stable"))
        if self.max_faces is not None and len(det) > self.max_faces:
            det = _take(det, np.arange(self.max_faces))
        return det


def config_defaults(config: DetectorConfig) -> dict[str, Any]:
    """The FaceDetector options a model config sets (``config.json``'s ``detector`` block)."""
    return {"name": config.name, "det_threshold": config.det_threshold, "nms_threshold": config.nms_threshold,
            "max_size": config.max_size}


def _check_values(*, mode: str, det_threshold: float, nms_threshold: float, max_size: int, max_faces: int | None,
                  sort_by: str, batch_size: int | None, runtime: str | None, rescue_threshold: float | None,
                  canvas_step: int | None) -> None:
    """Raise ValueError naming the first bad FaceDetector option, its value and what it accepts."""
    check_mode(mode, "FaceDetector")
    if not 0.0 <= det_threshold <= 1.0:
        raise ValueError(f"det_threshold must be in [0, 1], got {det_threshold}")
    if not 0.0 < nms_threshold <= 1.0:
        raise ValueError(f"nms_threshold must be in (0, 1], got {nms_threshold}")
    if max_size < 32:
        raise ValueError(f"max_size must be at least 32 pixels, got {max_size}")
    if max_faces is not None and max_faces < 1:
        raise ValueError(f"max_faces must be a positive integer or None, got {max_faces}")
    if sort_by not in SORT_KEYS:
        raise ValueError(f"sort_by must be one of {SORT_KEYS}, got {sort_by!r}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if runtime is not None and runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES} or None, got {runtime!r}")
    if rescue_threshold is not None and not 0.0 < rescue_threshold <= det_threshold:
        raise ValueError(f"rescue_threshold must be in (0, det_threshold={det_threshold}] or None, "
                         f"got {rescue_threshold}")
    if canvas_step is not None and (canvas_step < 32 or canvas_step % 32):
        raise ValueError(f"canvas_step must be a positive multiple of 32 (the network's stride), got {canvas_step}")


def _plain(value: Any) -> Any:
    """A JSON-ready form of an option value (dtypes and devices as strings)."""
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, torch.device):
        return str(value)
    return value


def _take(det: Detections, index: np.ndarray) -> Detections:
    return Detections(det.boxes[index], det.kps[index], det.scores[index])

