"""What a protocol run is: the paper's protocols, run options, the report and its wording.

Shared by the linear-evaluation runs (:mod:`facepcl.eval._linear`) and the
full fine-tuning runs (:mod:`facepcl.eval._full`); the public names are
re-exported by :mod:`facepcl.eval.protocols`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .._utils.digest import FIELD, encoder_digest
from ..config import feature_dim
from ..heads._inputs import check_features
from ..heads._spec import HeadSpec, TaskHead
from ..heads._train import FitResult, HeadTrainConfig
from ..model import PCLModel
from .datasets import LabelledImages

SELECTIONS = ("holdout", "val", "test", "last")


@dataclass(frozen=True)
class Protocol:
    """One downstream protocol.

    Attributes:
        name: "fer", "pose", "au" or "verify".
        task: "classification", "multilabel", "regression" or "verification".
        title: Human name.
        features: Encoder outputs fed to the head.
        input_size: Network input side in pixels.
        interpolation: Resize filter.
        head: "linear", "bn-linear", "mlp" or (verification only) "none".
        head_out: Output width of a verification head's embedding.
        train: Optimisation settings.
        loss: Loss, in words.
        source: Where the settings come from.
    """

    name: str
    task: str
    title: str
    input_size: int
    interpolation: str
    head: str
    train: HeadTrainConfig
    loss: str
    source: str
    features: tuple[str, ...] = ("trunk",)
    head_out: int = 512
    cv_folds: int = 0


PROTOCOLS: dict[str, Protocol] = {
    "fer": Protocol(
        "fer", "classification", "facial expression recognition", 100, "bilinear", "linear",
        HeadTrainConfig("adam", 1e-2, 0.0, "cosine", 300, 256, shuffle=False), "cross-entropy",
        "the reference code (main.py linear_eval, configs/remote_PCL_linear_eval.yaml); like it, the training "
        "set is not shuffled"),
    "pose": Protocol(
        "pose", "regression", "head pose regression", 256, "bicubic", "bn-linear",
        HeadTrainConfig("adamw", 1e-3, 0.01, "constant", 300, 128), "L1 on [yaw, pitch, roll] in degrees",
        "the reference code (main_pose.py, configs/remote_PCL_linear_eval_pose.yaml); it builds a cosine "
        "schedule but never steps it, so the learning rate is constant; AdamW's default weight decay 0.01"),
    "au": Protocol(
        "au", "multilabel", "action unit detection", 100, "bilinear", "bn-linear",
        HeadTrainConfig("adam", 1e-3, 0.0, "cosine", 20, 256), "binary cross-entropy per AU",
        "not in the reference code; BN+Linear with sigmoid/BCE as in the authors' follow-up, other settings "
        "facepcl's choice", cv_folds=3),
    "verify": Protocol(
        "verify", "verification", "face verification", 100, "bilinear", "bn-linear",
        HeadTrainConfig("adam", 1e-3, 0.0, "cosine", 20, 128), "cosine-embedding (margin 0) on pairs",
        "not in the reference code; BN+Linear with a cosine-embedding loss as in the authors' follow-up, "
        "other settings facepcl's choice; 10-fold accuracy with the threshold chosen on the 9 training folds"),
}


@dataclass(frozen=True)
class PaperRow:
    """A row of the paper's linear-evaluation table (pcl-reference.md section 6)."""

    dataset: str
    metric: str
    simclr: str
    pcl: str


PAPER: dict[str, PaperRow] = {
    "fer2013": PaperRow("FER-2013", "acc %", "49.51", "56.81"),
    "rafdb": PaperRow("RAF-DB", "acc %", "71.06", "74.47"),
    "lfw": PaperRow("LFW", "acc %", "75.97", "79.72"),
    "cplfw": PaperRow("CPLFW", "acc %", "62.25", "64.61"),
    "aflw2000": PaperRow("AFLW2000", "MAE deg (yaw/pitch/roll/mean)", "11.20/19.86/12.08/14.38",
                         "9.86/16.59/10.62/12.36"),
    "bu3dfe": PaperRow("BU-3DFE", "acc %", "98.85", "98.95"),
    "disfa": PaperRow("DISFA", "mean F1 (8 AUs)", "49.4", "54.8"),
}


@dataclass
class Report:
    """The outcome of a protocol run.

    Attributes:
        protocol: Protocol name.
        dataset: Dataset key (e.g. "rafdb").
        task: Task.
        metrics: Test metrics (fractions, or degrees for pose).
        primary: The paper-layout value of this run, e.g. "74.47" or "9.86/16.59/10.62/12.36".
        metric_label: e.g. "acc %".
        lines: The protocol and selection, in words.
        selection: "holdout", "val", "test" or "last".
        counts: Number of training / validation / test samples (or pairs).
        best_epochs: Selected epoch(s).
        model: Model id, revision and encoder digest (``encoder_sha256``).
    """

    protocol: str
    dataset: str
    task: str
    metrics: dict[str, Any]
    primary: str
    metric_label: str
    lines: list[str]
    selection: str
    counts: dict[str, int]
    best_epochs: list[int]
    model: dict[str, Any] = field(default_factory=dict)

    @property
    def test_selected(self) -> bool:
        """True when the epoch was chosen on the test set (optimistic)."""
        return self.selection == "test"

    def table(self) -> str:
        """The paper's table layout with this run as a column, then the protocol in words."""
        paper = PAPER.get(self.dataset)
        this = "this run (TEST-SELECTED)" if self.test_selected else "this run"
        head = ["dataset", "metric", "SimCLR (paper)", "PCL (paper)", this]
        row = [paper.dataset if paper else self.dataset, self.metric_label,
               paper.simclr if paper else "-", paper.pcl if paper else "-", self.primary]
        widths = [max(len(a), len(b)) for a, b in zip(head, row, strict=True)]

        def fmt(cells: list[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        out = [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", fmt(row), ""]
        out += self.lines
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["test_selected"] = self.test_selected
        return d


def holdout(data: LabelledImages, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): stratified by class, or by subject when subjects are known."""
    if not 0 < fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    n = len(data)
    if data.groups is not None:
        subjects = np.unique(data.groups)
        if len(subjects) < 2:
            raise ValueError(f"{data.name}: one subject cannot be split into train and validation subjects")
        k = max(1, round(len(subjects) * fraction))
        val_subjects = rng.choice(subjects, size=k, replace=False)
        val = np.isin(data.groups, val_subjects)
    elif data.task == "classification":
        val = np.zeros(n, bool)
        for c in np.unique(data.labels):
            idx = np.flatnonzero(data.labels == c)
            k = round(len(idx) * fraction)
            if len(idx) >= 2 and k == 0:
                k = 1
            val[rng.choice(idx, size=min(k, len(idx) - 1), replace=False)] = True
    else:
        val = np.zeros(n, bool)
        val[rng.choice(n, size=max(1, round(n * fraction)), replace=False)] = True
    if val.all() or not val.any():
        raise ValueError(f"{data.name}: {n} samples are too few for a {fraction:.0%} validation split; use "
                         "selection='last' or more data")
    return np.flatnonzero(~val), np.flatnonzero(val)


@dataclass
class RunOptions:
    """Everything :func:`run_protocol` can override.

    Attributes:
        features: Encoder outputs for the head (default the protocol's, trunk).
        head: Head kind (default the protocol's).
        hidden_dims, dropout: MLP settings.
        input_size, interpolation: Override the protocol's.
        train: Optimisation settings (default the protocol's).
        selection: "holdout" (default), "val", "test" or "last".
        val_fraction: Size of the holdout split.
        detect: False: the images are aligned crops; True: detect and align faces.
        cache, cache_dir, cache_dtype: Feature cache settings.
        batch_size_features: Images per encoder pass when computing features.
        device: Torch device.
        progress: Progress bars and per-epoch logs.
        name: Head name (default the protocol's).
    """

    features: tuple[str, ...] | None = None
    head: str | None = None
    hidden_dims: tuple[int, ...] = (512,)
    dropout: float = 0.0
    input_size: int | None = None
    interpolation: str | None = None
    train: HeadTrainConfig | None = None
    selection: str = "holdout"
    val_fraction: float = 0.1
    detect: bool = False
    cache: bool = True
    cache_dir: str | Path | None = None
    cache_dtype: str = "float32"
    batch_size_features: int = 64
    device: str | torch.device | None = None
    progress: bool = False
    name: str | None = None


@dataclass
class ProtocolResult:
    """A :class:`Report` and the trained head (None for a head-less verification)."""

    report: Report
    head: TaskHead | None
    fits: list[FitResult]


class Settings(NamedTuple):
    """A protocol's settings with the run's options applied."""

    feats: list[str]
    size: int
    interp: str
    cfg: HeadTrainConfig
    head_kind: str

    @property
    def in_dim(self) -> int:
        return len(self.feats) * feature_dim(self.size)

    def head(self, proto: Protocol, opt: RunOptions, task: str, out_dim: int, names: list[str],
             encoder: dict | None = None) -> TaskHead:
        """A new head for these settings, its initialisation seeded by the training seed."""
        torch.manual_seed(self.cfg.seed)
        mlp = self.head_kind == "mlp"
        return TaskHead(HeadSpec(name=opt.name or proto.name, task=task, features=list(self.feats),
                                 input_size=self.size, in_dim=self.in_dim, out_dim=out_dim, kind=self.head_kind,
                                 interpolation=self.interp, detect=opt.detect,
                                 hidden_dims=list(opt.hidden_dims) if mlp else [],
                                 dropout=opt.dropout if mlp else 0.0, label_names=names,
                                 encoder=dict(encoder or {})))


def settings(proto: Protocol, opt: RunOptions) -> Settings:
    """The protocol's settings with the run's options applied."""
    return Settings(check_features(opt.features or proto.features), opt.input_size or proto.input_size,
                     opt.interpolation or proto.interpolation, opt.train or proto.train, opt.head or proto.head)


def features_text(feats: Sequence[str]) -> str:
    """"trunk F", "face F_f+pose F_p", ...: features as the paper names them."""
    return "+".join({"trunk": "trunk F", "face": "face F_f", "pose": "pose F_p"}[f] for f in feats)


def model_summary(model: PCLModel) -> dict[str, Any]:
    """Which encoder a report describes: model id, revision and the sha256 of its weights."""
    prov = getattr(model, "provenance", None) or {}
    return {"model_id": prov.get("model_id"), "revision": prov.get("revision"), FIELD: encoder_digest(model)}


def encoder_record(model: PCLModel, model_info: dict[str, Any], finetuned: bool) -> dict[str, Any]:
    """What a head stores about the encoder it was trained with."""
    return {"model_id": model_info["model_id"], "revision": model_info["revision"],
            "config_hash": model.config.hash(), FIELD: model_info[FIELD],
            "finetuned": finetuned}


def check_task(d: LabelledImages, proto: Protocol) -> None:
    """Refuse a dataset whose task is not the protocol's."""
    if d.task != proto.task:
        raise ValueError(f"{d.name} is a {d.task} dataset but protocol {proto.name!r} is {proto.task}")


def selection_line(opt: RunOptions, fit: FitResult, cfg: HeadTrainConfig, sel_text: str, counts: dict) -> str:
    n_test = counts.get("test")
    if opt.selection == "test":
        return (f"Model selection: epoch {fit.best_epoch} of {cfg.epochs}, the best ON THE TEST SET - the reference "
                "code's practice. This number is OPTIMISTIC: the test data chose the model.")
    if opt.selection == "last":
        return (f"Model selection: none (the last of {cfg.epochs} epochs); the test set ({n_test}) was used once.")
    return (f"Model selection: epoch {fit.best_epoch} of {cfg.epochs}, the best on {sel_text}; the test set "
            f"({n_test}) was used once.")


def out_dim(d: LabelledImages) -> int:
    """Output width of a head for ``d``: classes, or label columns."""
    return len(d.label_names) if d.task == "classification" else int(d.labels.shape[1])


def describe(proto: Protocol, st: Settings, opt: RunOptions, out: int) -> list[str]:
    """The protocol, the head and its training, in words (the first lines of a report)."""
    feats, size, interp, cfg, head_kind = st
    in_dim = st.in_dim
    out_txt = {"linear": "Linear({in_dim}, {out})", "bn-linear": "BatchNorm1d({in_dim}) + Linear({in_dim}, {out})",
               "mlp": "MLP({in_dim} -> {hidden} -> {out})", "none": "no head"}[head_kind]
    head_txt = out_txt.format(in_dim=in_dim, out=out, hidden=list(opt.hidden_dims))
    init = ", N(0, 0.01) init, zero bias" if head_kind == "linear" else ""
    feat_txt = features_text(feats)
    frozen = "frozen encoder, features cached"
    lines = [f"Protocol: {proto.title}, linear evaluation ({frozen}); {feat_txt} at {size} px ({interp} resize, "
             f"{'detected and aligned' if opt.detect else 'aligned crops as given'}); head {head_txt}{init}."]
    if head_kind != "none":
        lines.append(f"Training: {cfg.optimizer} lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}, "
                     f"{'cosine over' if cfg.schedule == 'cosine' else 'constant for'} {cfg.epochs} epochs, batch "
                     f"{cfg.batch_size}{'' if cfg.shuffle else ' (not shuffled)'}, {proto.loss}, seed {cfg.seed}.")
    paper_like = (feats == proto.features and size == proto.input_size and head_kind == proto.head
                  and cfg == proto.train)
    lines.append(f"Settings from: {proto.source}." if paper_like else
                 f"Settings: CHANGED from the paper protocol ({proto.source}).")
    return lines


def make_report(proto: Protocol, dataset: str, m: dict[str, Any], lines: list[str], *, selection: str,
                counts: dict[str, int], epochs: list[int], model_info: dict[str, Any]) -> Report:
    """A :class:`Report`: the paper-layout value of the metrics, and a last line naming the encoder."""
    if proto.task == "regression":
        keys = [k for k in ("mae_yaw", "mae_pitch", "mae_roll", "mae_mean") if k in m]
        primary = "/".join(f"{m[k]:.2f}" for k in keys) if len(keys) == 4 else f"{m['mae_mean']:.2f}"
        label = "MAE deg (yaw/pitch/roll/mean)" if len(keys) == 4 else "MAE (mean)"
    elif proto.task == "multilabel":
        primary, label = f"{100 * m['f1_mean']:.1f}", f"mean F1 ({sum(k.startswith('f1_') for k in m) - 1} labels)"
    else:
        primary, label = f"{100 * m['accuracy']:.2f}", "acc %"
    lines = [*lines, f"Model: {model_info.get('model_id') or 'in-memory'}"
             f"{' @ ' + model_info['revision'] if model_info.get('revision') else ''}, encoder_sha256 "
             f"{model_info[FIELD][:16]}."]
    return Report(proto.name, dataset, proto.task, m, primary, label, lines, selection, counts, epochs, model_info)


def protocol_record(proto: Protocol, opt: RunOptions, cfg: HeadTrainConfig, dataset: str,
                    report: Report) -> dict[str, Any]:
    """What a head stores about the run that trained it (``head.json`` ``protocol``)."""
    return {"protocol": proto.name, "dataset": dataset, "selection": opt.selection,
            "test_selected": opt.selection == "test", "train": dataclasses.asdict(cfg),
            "counts": report.counts, "best_epochs": report.best_epochs, "description": report.lines}
