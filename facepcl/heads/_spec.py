"""A task head with everything needed to use it again: ``HeadSpec`` + ``TaskHead``.

The spec is what ``head.json`` stores: the task, which encoder features at
which input size feed the head, the network's shape, label names, the
decision rule, the metrics it reached and the protocol that produced them,
and the encoder it was trained on.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._utils.validate import MAX_CROP_SIZE, MAX_WIDTH, bounded_int, check_parameters
from .._utils.version import __version__
from ..config import feature_dim
from ..model import PCLFeatures
from ..preprocess import RESIZE_INTERPOLATIONS
from ._inputs import check_features, select_features
from ._modules import HEAD_KINDS, build_head

TASKS = ("classification", "multilabel", "regression", "verification")
FORMAT = "facepcl-head"
FORMAT_VERSION = 1


@dataclass
class HeadSpec:
    """Description of a trained head (the content of ``head.json``).

    Attributes:
        name: Short name, also the folder name suffix (``head-<name>``), e.g. "fer".
        task: "classification", "multilabel", "regression" or "verification".
        features: Encoder outputs fed to the head, concatenated in this order.
        input_size: Side in pixels of the aligned crop given to the encoder.
        interpolation: How crops are resized to ``input_size``.
        detect: How the training images were prepared: False (already
            aligned crops, resized) or True (faces detected and aligned).
        kind: "linear", "bn-linear" or "mlp".
        in_dim: Input width (``len(features) * feature_dim(input_size)``).
        out_dim: Output width.
        hidden_dims: MLP hidden widths.
        dropout: MLP dropout.
        label_names: Class names / AU names / output names (yaw, pitch, roll).
        threshold: Decision threshold: sigmoid probability for multilabel
            (0.5), cosine similarity for verification.
        metrics: Test metrics reached, e.g. ``{"accuracy": 0.74}``.
        protocol: How it was trained and selected (free-form, JSON).
        encoder: The encoder it was trained with: ``model_id``, ``revision``,
            ``config_hash``, ``encoder_sha256`` (:mod:`facepcl._utils.digest`),
            ``finetuned``.
        license: The head's licence, as models carry theirs (a head trained on a
            dataset comes under the dataset's terms as well as the encoder's,
            e.g. "CC-BY-NC-4.0"); None: not stated, so treat it as unknown.
        facepcl_version: Version that wrote it.
    """

    name: str
    task: str
    features: list[str]
    input_size: int
    in_dim: int
    out_dim: int
    kind: str = "linear"
    interpolation: str = "bilinear"
    detect: bool = False
    hidden_dims: list[int] = field(default_factory=list)
    dropout: float = 0.0
    label_names: list[str] = field(default_factory=list)
    threshold: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    encoder: dict[str, Any] = field(default_factory=dict)
    license: str | None = None
    facepcl_version: str = __version__

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"head task {self.task!r} is not one of {TASKS}")
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"head kind {self.kind!r} is not one of {HEAD_KINDS}")
        if self.interpolation not in RESIZE_INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} is not one of {RESIZE_INTERPOLATIONS}")
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"head name {self.name!r} must be a plain folder-safe word such as 'fer'")
        self.features = list(check_features(self.features))
        self._check_sizes()
        if self.label_names and len(self.label_names) != self.out_dim and self.task != "verification":
            raise ValueError(f"head {self.name!r}: {len(self.label_names)} label names for out_dim {self.out_dim}")

    def _check_sizes(self) -> None:
        """Bound every size before the network is built (see :mod:`facepcl._utils.validate`)."""
        where = f"head {self.name!r}: "
        try:
            bounded_int(self.input_size, "input_size", MAX_CROP_SIZE, low=16, unit=" pixels")
            bounded_int(self.in_dim, "in_dim", 3 * feature_dim(MAX_CROP_SIZE))
            bounded_int(self.out_dim, "out_dim", MAX_WIDTH)
            if not isinstance(self.hidden_dims, (list, tuple)):
                raise ValueError(f"hidden_dims must be a list of widths, got {self.hidden_dims!r}")
            hidden = [bounded_int(h, f"hidden_dims[{i}]", MAX_WIDTH) for i, h in enumerate(self.hidden_dims)]
            widths = [self.in_dim, *(hidden or [512] if self.kind == "mlp" else []), self.out_dim]
            count = sum(a * b + 3 * b for a, b in itertools.pairwise(widths))
            check_parameters(count, f"the {self.kind} network ({' -> '.join(map(str, widths))})")
        except ValueError as e:
            raise ValueError(where + str(e)) from None

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "head.json") -> HeadSpec:
        """Build from ``head.json``'s content; unknown or missing keys are errors naming them."""
        data = dict(data)
        fmt, ver = data.pop("format", None), data.pop("format_version", None)
        if fmt != FORMAT:
            raise ValueError(f"{where}: 'format' is {fmt!r}, not {FORMAT!r}; this is not a facepcl head")
        if not isinstance(ver, int) or ver > FORMAT_VERSION:
            raise ValueError(f"{where}: format_version {ver!r} is newer than this facepcl ({__version__}) reads "
                             f"({FORMAT_VERSION}); upgrade facepcl")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        required = [n for n, f in fields.items()
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = sorted(set(required) - set(data))
        if unknown or missing:
            raise ValueError(f"{where}: unknown keys {unknown}, missing keys {missing}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from e


class TaskHead(nn.Module):
    """A head network plus its :class:`HeadSpec`.

    ``forward`` takes :class:`~facepcl.PCLFeatures` (or an already selected
    ``(B, in_dim)`` tensor) and returns raw outputs; :meth:`predict` returns
    task-level predictions.
    """

    def __init__(self, spec: HeadSpec) -> None:
        super().__init__()
        self.spec = spec
        self.net = build_head(spec.kind, spec.in_dim, spec.out_dim, hidden_dims=spec.hidden_dims or (512,),
                              dropout=spec.dropout)

    def forward(self, feats: PCLFeatures | torch.Tensor) -> torch.Tensor:
        """``PCLFeatures`` or ``(B, in_dim)`` -> ``(B, out_dim)`` raw outputs (logits, degrees, embedding)."""
        x = feats if isinstance(feats, torch.Tensor) else select_features(feats, self.spec.features)
        if x.shape[1] != self.spec.in_dim:
            raise ValueError(f"head {self.spec.name!r} expects {self.spec.in_dim} input features "
                             f"({'+'.join(self.spec.features)} at {self.spec.input_size} px), got {x.shape[1]}")
        return self.net(x)

    @torch.no_grad()
    def predict(self, feats: PCLFeatures | torch.Tensor) -> HeadPrediction:
        """Task-level predictions for a batch (the head is used in eval mode)."""
        was = self.training
        self.eval()
        try:
            out = self(feats).float()
        finally:
            self.train(was)
        return postprocess(self.spec, out)


@dataclass
class HeadPrediction:
    """Predictions of one head for B faces.

    Attributes:
        name: Head name.
        task: Its task.
        scores: ``(B, K)`` float32: class probabilities (classification),
            AU probabilities (multilabel), [yaw, pitch, roll] in degrees
            (regression) or the L2-normalised embedding (verification).
        labels: Classification: ``(B,)`` predicted class names. Multilabel:
            ``(B, K)`` bool, present labels. Otherwise None.
        label_names: Names of the K columns.
    """

    name: str
    task: str
    scores: np.ndarray
    labels: np.ndarray | None
    label_names: list[str]


def postprocess(spec: HeadSpec, out: torch.Tensor) -> HeadPrediction:
    """Raw outputs ``(B, out_dim)`` -> :class:`HeadPrediction` following ``spec``'s task."""
    names = list(spec.label_names)
    if spec.task == "classification":
        probs = torch.softmax(out, dim=1).cpu().numpy()
        idx = probs.argmax(1)
        labels = np.asarray([names[i] if names else str(i) for i in idx], dtype=object)
        return HeadPrediction(spec.name, spec.task, probs.astype(np.float32), labels, names)
    if spec.task == "multilabel":
        probs = torch.sigmoid(out).cpu().numpy().astype(np.float32)
        thr = 0.5 if spec.threshold is None else spec.threshold
        return HeadPrediction(spec.name, spec.task, probs, probs >= thr, names)
    if spec.task == "regression":
        return HeadPrediction(spec.name, spec.task, out.cpu().numpy().astype(np.float32), None, names)
    emb = F.normalize(out, dim=1).cpu().numpy().astype(np.float32)
    return HeadPrediction(spec.name, spec.task, emb, None, names)
