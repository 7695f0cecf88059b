"""What the demo page shows for one photo, computed without any web framework (so it is testable on its own)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..errors import ImageLoadError, ModelLoadError
from ..io.images import to_decoded
from ..viz._draw import PALETTE, font

#: Largest photo the page takes, in bytes (``facepcl demo --max-upload-mb``); far above any camera's JPEG.
MAX_UPLOAD_BYTES = 32 << 20

#: Landmark colours: left eye, right eye, nose, left and right mouth corner.
KPS_COLOURS = ((0, 255, 0), (0, 255, 0), (255, 0, 0), (0, 128, 255), (0, 128, 255))


@dataclass
class Analysis:
    """One photo through the model.

    Attributes:
        message: What the page says first (Markdown): the face count, or why there is nothing to show.
        count: Number of faces found (0 also for unreadable files).
        annotated: The photo with numbered boxes and landmarks, or None.
        crops: Per face ``(S, S, 3)`` uint8 aligned crop and its caption.
        embeddings: Path of an ``.npz`` with face, pose, trunk ``(N, D)``, bbox, kps, det_score; None without faces.
        predictions: Per face, head name -> prediction (label and scores), when the model has heads.
        result: The :class:`~facepcl.EmbeddingResult` (None when the file was unreadable).
    """

    message: str
    count: int = 0
    annotated: Image.Image | None = None
    crops: list[tuple[np.ndarray, str]] = field(default_factory=list)
    embeddings: str | None = None
    predictions: list[dict[str, Any]] = field(default_factory=list)
    result: Any = None


class DemoModel:
    """The model behind the page: an embedder (with the decoder when the model has one) and an optional index.

    Args:
        model: ``facepcl.load`` name, Hub id or folder (None: ``$FACEPCL_MODEL``, else pcl-demo).
        revision: Hub revision to pin.
        device: Torch device.
        index: Folder of a :class:`~facepcl.search.FaceIndex` for nearest neighbours, or None.
        k: Neighbours per face.
        max_upload_bytes: Larger photos are refused with a message (None: no limit).
    """

    def __init__(self, model: str | os.PathLike | None = None, *, revision: str | None = None,
                 device: str | None = None, index: str | os.PathLike | None = None, k: int = 5,
                 max_upload_bytes: int | None = MAX_UPLOAD_BYTES) -> None:
        self.max_upload_bytes = max_upload_bytes
        from ..pipeline import FaceEmbedder
        from ..viz import load_decoder_model

        try:
            net = load_decoder_model(model, device=device, revision=revision)
            self.swap_note = ""
        except ModelLoadError as e:  # the page still works; only the swap grid is off, and says why
            from ..hub import load

            net = load(model, device=device, revision=revision)
            self.swap_note = str(e)
        self.embedder = FaceEmbedder(net, return_crops=True)
        self.index = None
        self.k = int(k)
        if index is not None:
            from ..search import FaceIndex

            self.index = FaceIndex.load(index)
            from .._utils.digest import encoder_digest

            want, got = self.index.encoder_sha256, encoder_digest(net)
            if want != got:
                raise ValueError(f"{index}: built with another encoder (encoder_sha256 {want}) than this demo's "
                                 f"({got}); start the demo with --model of the index's exports")
        self.workdir = tempfile.mkdtemp(prefix="facepcl-demo-")

    @property
    def has_decoder(self) -> bool:
        """Whether pose swaps can be drawn."""
        return self.embedder.model.decoder is not None

    def analyze(self, path: str | None) -> Analysis:
        """Detect, align and embed every face of the photo at ``path``.

        Files over ``max_upload_bytes`` and files that are not images get a
        message saying so (nothing raises); huge JPEGs are decoded at reduced
        scale, with boxes and landmarks reported in the file's pixels.
        """
        if not path:
            return Analysis("Upload or drop a photo to start.")
        name = os.path.basename(path)
        try:
            size = os.path.getsize(path)
        except OSError as e:
            return Analysis(f"**Cannot read {name}**: {e.strerror or e}")
        limit = self.max_upload_bytes
        if limit is not None and size > limit:
            return Analysis(f"**{name} is too large** ({_size(size)}): this page takes photos up to "
                            f"{_size(limit)}. Upload a smaller photo, or start the demo with --max-upload-mb N")
        try:
            image = self.embedder.load(path)
        except ImageLoadError as e:
            return Analysis(f"**Cannot read {name}**: {str(e).removeprefix(f'{path}: ')}")
        res = self.embedder.embed_loaded([image], names=[name])
        if len(res) == 0:
            return Analysis(f"**No face found** in {name}. Try a photo where faces are larger than about 20 "
                            "pixels and seen from the front or side.", result=res)
        n = len(res)
        out = Analysis(f"**{n} face{'s' * (n != 1)} found** in {name}", count=n, result=res)
        out.annotated = draw_faces(image, *to_decoded(image, res.bbox, res.kps))  # results are in file pixels
        out.crops = [(res.crops[i], f"face {i} (score {res.det_score[i]:.2f})") for i in range(n)]
        out.embeddings = os.path.join(self.workdir, f"{os.path.splitext(name)[0]}-embeddings.npz")
        np.savez(out.embeddings, face=res.face, pose=res.pose, trunk=res.trunk, bbox=res.bbox, kps=res.kps,
                 det_score=res.det_score)
        out.predictions = [{head: _prediction(p, i) for head, p in res.predictions.items()} for i in range(n)]
        return out

    def analyze_upload(self, path: str | None) -> Analysis:
        """:meth:`analyze` a photo uploaded to the page, then delete the upload (the page keeps no photo)."""
        try:
            return self.analyze(path)
        finally:
            if path:
                with contextlib.suppress(OSError):
                    os.remove(path)
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.dirname(path))  # Gradio's per-upload folder, once empty

    def swap(self, analysis: Analysis | None, a: int, b: int) -> tuple[Image.Image | None, str]:
        """The pose-swap grid of faces ``a`` and ``b`` of the analysed photo, and a message."""
        from ..viz import SwapResult, decode_pairs, render_swap_grid

        if not self.has_decoder:
            return None, f"Pose swaps need a model with its decoder: {self.swap_note}"
        if analysis is None or analysis.count == 0:
            return None, "Upload a photo with faces first."
        a, b = int(a), int(b)
        if not (0 <= a < analysis.count and 0 <= b < analysis.count):
            return None, f"Choose faces between 0 and {analysis.count - 1}."
        res = analysis.result
        recon = decode_pairs(self.embedder.model, res.face[[a, a, b, b]], res.pose[[a, b, a, b]])
        swaps = SwapResult(pairs=np.array([[a, b]]), aligned_a=res.crops[[a]], aligned_b=res.crops[[b]],
                           reconstructions=recon[None], names=(f"face {a}", f"face {b}"),
                           info=self.embedder.info())
        return render_swap_grid(swaps, scale=3), f"face {a} in the pose of face {b}, and back"

    def neighbours(self, analysis: Analysis | None, by: str = "face") -> tuple[Image.Image | None, str]:
        """Each face of the photo with its nearest faces in the index (a grid picture) and a message."""
        from ..search import Query, render_search_grid

        if self.index is None:
            return None, "Start the demo with --index INDEX to see nearest neighbours."
        if analysis is None or analysis.count == 0:
            return None, "Upload a photo with faces first."
        res = analysis.result
        queries = [Query(f"face {i}", getattr(res, by)[i], res.crops[i]) for i in range(analysis.count)]
        found = self.index.search(np.stack([q.vector for q in queries]), by=by, k=self.k)
        picture, problems = render_search_grid(self.index, queries, found)
        note = f"{self.k} nearest by {by} code among {len(self.index)} indexed faces"
        return picture, note + (f" ({len(problems)} source files unreadable: grey tiles)" if problems else "")


def draw_faces(image: np.ndarray, bbox: np.ndarray, kps: np.ndarray) -> Image.Image:
    """The photo with numbered boxes and 5 landmarks per face.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        bbox: ``(N, 4)`` x1, y1, x2, y2 pixels.
        kps: ``(N, 5, 2)`` landmark pixels (NaN: not detected).
    """
    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    side = max(image.shape[:2])
    width, radius = max(2, side // 300), max(2, side // 250)
    fnt = font(max(12, side // 40))
    for i, box in enumerate(bbox):
        colour = PALETTE[i % len(PALETTE)]
        draw.rectangle([float(v) for v in box], outline=colour, width=width)
        draw.text((float(box[0]) + width, float(box[1]) + width), str(i), fill=colour, font=fnt)
        for (x, y), c in zip(kps[i], KPS_COLOURS, strict=True):
            if np.isfinite(x) and np.isfinite(y):
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=c)
    return canvas


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB".replace(".0 MB", " MB") if n >= 2**20 else f"{n:,} bytes"


def _prediction(pred: Any, row: int) -> Any:
    """One face's prediction of one head, as plain JSON values."""
    scores = np.asarray(pred.scores[row], dtype=float)
    out: dict[str, Any] = {"task": pred.task}
    if pred.labels is not None:
        label = pred.labels[row]
        out["label"] = ([n for n, on in zip(pred.label_names, label, strict=True) if on]
                        if np.ndim(label) else str(label))
    if pred.label_names and len(pred.label_names) == len(scores):
        out["scores"] = {n: round(float(s), 4) for n, s in zip(pred.label_names, scores, strict=True)}
    elif pred.task != "verification":
        out["scores"] = [round(float(s), 4) for s in scores]
    return out
