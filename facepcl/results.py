"""Step 6 of the data path: what an embedding call returns, and how results compare.

:class:`EmbeddingResult` holds numpy arrays (one row per face) with the
skipped inputs and provenance; :meth:`EmbeddingResult.to_torch` gives them as
torch tensors. :func:`similarity` is the cosine similarity of the face codes
of two results (or of plain arrays/tensors), so comparing two photos is one line::

    sim = facepcl.similarity(facepcl.embed("a.jpg"), facepcl.embed("b.jpg"))   # (faces in a, faces in b)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np
import torch

from ._utils.constants import FEATURES


class Failure(NamedTuple):
    """An input that was skipped.

    Attributes:
        index: Position of the input in the call.
        input: Description of the input (its path, or type and shape).
        reason: Why it was skipped (the error message).
    """

    index: int
    input: str
    reason: str


@dataclass
class EmbeddingResult:
    """Per-face embeddings of a call, one row per face, faces of image 0 first.

    Attributes:
        face: ``(N, D)`` float32 face features F_f (pose-unrelated branch).
        pose: ``(N, D)`` float32 pose features F_p.
        trunk: ``(N, D)`` float32 trunk features F (the paper's linear-probe feature).
            ``D = 128 * (S/16)^2`` for crop side ``S``: 2048 at 64 px.
        bbox: ``(N, 4)`` float32 face boxes x1, y1, x2, y2 in pixels of the
            input image as decoded (upright after its EXIF orientation; the
            whole image for faces that were not detected).
        kps: ``(N, 5, 2)`` float32 landmarks in original pixels (left eye, right
            eye, nose, left and right mouth corner); NaN where not detected.
        det_score: ``(N,)`` float32 detector scores; NaN where not detected.
        image_index: ``(N,)`` int64 index of the input each face comes from.
        crops: ``(N, S, S, 3)`` uint8 RGB aligned crops, if asked for, else None.
        failures: Inputs that were skipped, with the reason.
        no_face: Indices of readable inputs in which no face was found
            (skipped, or embedded whole with ``on_no_face="full_image"``).
        num_images: Number of inputs.
        info: Provenance: model id, revision, config hash, crop size, detector, facepcl version.
        predictions: Head name -> ``HeadPrediction`` (one row per face) when the
            model has task heads attached (``facepcl.load(..., head="fer")``);
            each head sees the face aligned at its own input size.
    """

    face: np.ndarray
    pose: np.ndarray
    trunk: np.ndarray
    bbox: np.ndarray
    kps: np.ndarray
    det_score: np.ndarray
    image_index: np.ndarray
    crops: np.ndarray | None = None
    failures: list[Failure] = field(default_factory=list)
    no_face: list[int] = field(default_factory=list)
    num_images: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    predictions: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image_index)

    def __repr__(self) -> str:
        dim = self.face.shape[1] if self.face.ndim == 2 else "?"
        faces, images = len(self), self.num_images
        return (f"EmbeddingResult({faces} face{'s' * (faces != 1)} from {images} image{'s' * (images != 1)}, "
                f"dim={dim}, failures={len(self.failures)}, no_face={len(self.no_face)})")

    @classmethod
    def empty(cls, dim: int, crop_size: int | None = None, **kwargs: Any) -> EmbeddingResult:
        """A result with no faces (``crop_size`` given: an empty ``crops`` array too)."""
        crops = None if crop_size is None else np.zeros((0, crop_size, crop_size, 3), np.uint8)
        return cls(face=np.zeros((0, dim), np.float32), pose=np.zeros((0, dim), np.float32),
                   trunk=np.zeros((0, dim), np.float32), bbox=np.zeros((0, 4), np.float32),
                   kps=np.zeros((0, 5, 2), np.float32), det_score=np.zeros((0,), np.float32),
                   image_index=np.zeros((0,), np.int64), crops=crops, **kwargs)

    def select(self, rows: np.ndarray | Sequence[int] | slice) -> EmbeddingResult:
        """The faces at ``rows`` (indices, boolean mask or slice); failures and counts are kept."""
        return replace(self, face=self.face[rows], pose=self.pose[rows], trunk=self.trunk[rows],
                       bbox=self.bbox[rows], kps=self.kps[rows], det_score=self.det_score[rows],
                       image_index=self.image_index[rows], crops=None if self.crops is None else self.crops[rows],
                       predictions={n: _rows(p, rows) for n, p in self.predictions.items()})

    def for_image(self, index: int) -> EmbeddingResult:
        """The faces of input ``index`` (possibly none), as a result of that one input.

        The part holds only that input's failure (if it could not be read),
        ``no_face == [index]`` if no face was found in it, and ``num_images == 1``.
        Indices keep their meaning in the whole call: ``image_index`` and
        ``Failure.index`` stay ``index`` (not 0), so a part still says which
        input it comes from.
        """
        return replace(self.select(np.nonzero(self.image_index == index)[0]),
                       failures=[f for f in self.failures if f.index == index],
                       no_face=[i for i in self.no_face if i == index], num_images=1)

    def per_image(self) -> list[EmbeddingResult]:
        """One result per input, in input order: ``per_image()[i]`` is :meth:`for_image` ``(i)``.

        Failed and face-less inputs get a part with no faces (and their
        failure or ``no_face`` entry). Call it on a whole result; a part's
        ``image_index`` keeps its input's position in the call.
        """
        return [self.for_image(i) for i in range(self.num_images)]

    def to_torch(self, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """The per-face arrays as torch tensors.

        On the CPU the tensors share memory with the arrays (no copy).

        Args:
            device: Where to put them (None: the CPU).

        Returns:
            ``{"face", "pose", "trunk": (N, D) float32, "bbox": (N, 4) float32,
            "kps": (N, 5, 2) float32, "det_score": (N,) float32,
            "image_index": (N,) int64}``, plus ``"crops": (N, S, S, 3)`` uint8
            when the result holds crops.
        """
        names = (*FEATURES, "bbox", "kps", "det_score", "image_index") + (("crops",) if self.crops is not None else ())
        return {n: torch.from_numpy(np.ascontiguousarray(getattr(self, n))).to(device or "cpu") for n in names}

    @classmethod
    def concatenate(cls, results: Sequence[EmbeddingResult]) -> EmbeddingResult:
        """Join results whose ``image_index`` values are already global (e.g. chunks of one stream)."""
        if not results:
            raise ValueError("nothing to concatenate")
        with_crops = [r.crops is not None for r in results]
        if any(with_crops) and not all(with_crops):
            raise ValueError("cannot concatenate results with and without crops")
        cat = {name: np.concatenate([getattr(r, name) for r in results])
               for name in (*FEATURES, "bbox", "kps", "det_score", "image_index")}
        crops = np.concatenate([r.crops for r in results]) if all(with_crops) else None
        with_preds = [r for r in results if len(r)]
        preds = {n: _cat_rows([r.predictions[n] for r in with_preds])
                 for n in (with_preds[0].predictions if with_preds else {})}
        return cls(**cat, crops=crops, predictions=preds, failures=[f for r in results for f in r.failures],
                   no_face=[i for r in results for i in r.no_face], num_images=sum(r.num_images for r in results),
                   info=dict(results[0].info))


def _rows(pred: Any, rows: Any) -> Any:
    return replace(pred, scores=pred.scores[rows], labels=None if pred.labels is None else pred.labels[rows])


def _cat_rows(preds: list[Any]) -> Any:
    labels = None if preds[0].labels is None else np.concatenate([p.labels for p in preds])
    return replace(preds[0], scores=np.concatenate([p.scores for p in preds]), labels=labels)


def _similarity_rows(x: Any, feature: str, name: str) -> np.ndarray | torch.Tensor:
    """``x`` as a 2-D ``(N, D)`` float array or tensor: an EmbeddingResult's ``feature``, or the data itself."""
    if not isinstance(x, (np.ndarray, torch.Tensor, list, tuple)):
        if not hasattr(x, feature):
            raise TypeError(f"{name} must be an EmbeddingResult, a numpy array or a torch tensor of embeddings; "
                            f"got {type(x).__name__}")
        x = getattr(x, feature)
    if isinstance(x, (list, tuple)):
        x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"{name} must hold embeddings as (N, D) or one (D,) vector; got shape {tuple(x.shape)}")
    if isinstance(x, np.ndarray) and not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    if isinstance(x, torch.Tensor) and not x.is_floating_point():
        x = x.float()
    return x


def similarity(a: Any, b: Any, feature: str = "face") -> np.ndarray | torch.Tensor:
    """Cosine similarity of every embedding of ``a`` with every embedding of ``b``.

    Args:
        a: An :class:`~facepcl.EmbeddingResult` (its ``feature`` rows, one per
            face), or embeddings as a numpy array / torch tensor ``(N, D)``
            (or one ``(D,)`` vector).
        b: The same kinds as ``a``, ``(M, D)``.
        feature: Which embedding of an EmbeddingResult: "face" (F_f, who it
            is and the expression, not the pose; the default), "pose" (F_p)
            or "trunk" (F). Ignored for arrays and tensors.

    Returns:
        ``(N, M)`` cosine similarities in [-1, 1]: a torch tensor (on ``a``'s
        device) when both inputs are tensors, else a float32 numpy array. A
        zero vector has similarity 0 with everything.

    Raises:
        ValueError: Unknown ``feature``, or ``a`` and ``b`` of different widths
            (e.g. features of crops of different sizes).
    """
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {FEATURES}, got {feature!r}")
    x, y = _similarity_rows(a, feature, "a"), _similarity_rows(b, feature, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"a has {x.shape[1]}-d embeddings but b has {y.shape[1]}-d ones: compare features of the "
                         "same model at the same crop size")
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
        x, y = x.float(), y.to(device=x.device, dtype=torch.float32)
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        y = y / y.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return x @ y.T
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)  # float64: exact 1.0 for identical rows
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    return np.clip(x @ y.T, -1.0, 1.0).astype(np.float32)


__all__ = ["similarity"]
