"""Linear evaluation: a frozen encoder's cached features, a head trained on them, test metrics.

:func:`run_protocol` builds one :class:`RunContext` and hands it to the
helper of the data's layout: train/test splits, subject cross-validation,
or verification pairs. :func:`evaluate_head` tests a saved head without
training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._utils.device import resolve_device
from .._utils.digest import FIELD, encoder_digest
from ..heads import metrics
from ..heads._spec import TaskHead
from ..heads._train import HeadTrainConfig, fit_features, fit_pairs, outputs, pair_scores, task_metrics
from ..model import PCLModel
from ._protocol import (
    PROTOCOLS,
    SELECTIONS,
    Protocol,
    ProtocolResult,
    Report,
    RunOptions,
    Settings,
    check_task,
    describe,
    encoder_record,
    holdout,
    make_report,
    model_summary,
    out_dim,
    protocol_record,
    selection_line,
    settings,
)
from .datasets import LabelledImages, PairList, subject_folds
from .datasets._base import ImageSource
from .features import FeatureSet, extract_features


@dataclass
class RunContext:
    """What every step of one protocol run shares.

    Attributes:
        model: The frozen encoder.
        proto: The protocol.
        opt: The run's options.
        st: The protocol's settings with the options applied.
        dataset: Dataset key (the paper's row).
        device: Where heads train.
        model_info: Model id, revision and encoder digest (reports).
        encoder: What each head records about the encoder.
        describe: The report's first lines (protocol, head, training).
        notes: Lines added before the report's last line (faces not found, ...).
    """

    model: PCLModel
    proto: Protocol
    opt: RunOptions
    st: Settings
    dataset: str
    device: torch.device
    model_info: dict[str, Any]
    encoder: dict[str, Any]
    describe: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _memo: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def cfg(self) -> HeadTrainConfig:
        return self.st.cfg

    def compute(self, images: ImageSource) -> FeatureSet:
        """The features of ``images`` at the run's settings (cached on disk as the options say)."""
        opt = self.opt
        return extract_features(self.model, images, features=self.st.feats, input_size=self.st.size,
                                interpolation=self.st.interp, detect=opt.detect, batch_size=opt.batch_size_features,
                                device=self.device, cache=opt.cache, cache_dir=opt.cache_dir, dtype=opt.cache_dtype,
                                progress=opt.progress)

    def features_of(self, images: ImageSource) -> np.ndarray:
        """``(N, in_dim)`` features of images that all have a face, computed once per run."""
        if id(images) not in self._memo:
            fs = self.compute(images)
            if not fs.valid.all():  # only with detect=True; usable() removed them from labelled sets
                raise AssertionError("images without a detected face reached training")
            self._memo[id(images)] = fs.matrix(self.st.feats)  # once per run even without the disk cache
        return self._memo[id(images)]

    def usable(self, d: LabelledImages) -> LabelledImages:
        """The samples whose face was found (all of them unless detect=True), features memoised."""
        if not self.opt.detect:
            return d
        fs = self.compute(d.images)
        if fs.valid.all():
            return d
        keep = np.flatnonzero(fs.valid)
        self.notes.append(f"No face was detected in {len(d) - len(keep)} of {len(d)} images of {d.name}; they "
                          "were left out.")
        sub = d.subset(keep)
        self._memo[id(sub.images)] = np.asarray(fs.matrix(self.st.feats))[keep]
        return sub

    def new_head(self, width: int, names: list[str], task: str) -> TaskHead:
        """A fresh head for this run, seeded by the training seed."""
        return self.st.head(self.proto, self.opt, task, width, names, self.encoder)

    def report(self, m: dict[str, Any], lines: list[str], counts: dict[str, int], epochs: list[int],
               selection: str | None = None) -> Report:
        return make_report(self.proto, self.dataset, m, lines, selection=selection or self.opt.selection,
                           counts=counts, epochs=epochs, model_info=self.model_info)

    def finish(self, head: TaskHead | None, report: Report, spec_metrics: dict[str, Any]) -> None:
        """Record the metrics and the protocol on the trained head."""
        if head is not None:
            head.spec.metrics = spec_metrics
            head.spec.protocol = protocol_record(self.proto, self.opt, self.cfg, self.dataset, report)


def run_protocol(model: PCLModel, protocol: str | Protocol, data: dict[str, LabelledImages] | PairList,
                 dataset: str, options: RunOptions | None = None) -> ProtocolResult:
    """Run a protocol: features once, head training with honest selection, test metrics.

    Args:
        model: Frozen encoder.
        protocol: A name in :data:`PROTOCOLS` or a :class:`Protocol`.
        data: ``{"train", "test"[, "val"]}`` labelled sets; a DISFA-style set
            ``{"all"}`` with subject groups (cross-validated); or a
            :class:`PairList` for verification.
        dataset: Dataset key for the paper's row (e.g. "rafdb").
        options: Overrides.

    Returns:
        A :class:`ProtocolResult`.
    """
    proto = PROTOCOLS[protocol] if isinstance(protocol, str) else protocol
    opt = options or RunOptions()
    if opt.selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {opt.selection!r}")
    st = settings(proto, opt)
    info = model_summary(model)
    ctx = RunContext(model, proto, opt, st, dataset, resolve_device(opt.device), info,
                     encoder_record(model, info, finetuned=False))
    if isinstance(data, PairList):
        width = proto.head_out
    else:
        first = data.get("train") or data.get("all")
        width = out_dim(first) if first is not None else 0
    ctx.describe = describe(proto, st, opt, width)
    if isinstance(data, PairList):
        if proto.task != "verification":
            raise ValueError(f"protocol {proto.name!r} needs labelled images, got verification pairs")
        result = _run_verification(ctx, data)
    elif proto.task == "verification":
        raise ValueError("the verification protocol needs a pair list (LFW / CPLFW pairs file)")
    elif "all" in data and "test" not in data:
        result = _run_cv(ctx, ctx.usable(data["all"]))
    else:
        result = _run_split(ctx, {k: ctx.usable(v) for k, v in data.items()})
    if ctx.notes:
        result.report.lines[-1:-1] = ctx.notes
    return result


def _run_split(ctx: RunContext, data: dict[str, LabelledImages]) -> ProtocolResult:
    """Train on the train split (selecting the epoch as the options say), test once on the test split."""
    proto, opt, cfg, device, features_of = ctx.proto, ctx.opt, ctx.cfg, ctx.device, ctx.features_of
    for need in ("train", "test"):
        if need not in data:
            raise ValueError(f"dataset {ctx.dataset!r} has no {need!r} split (has {sorted(data)}); pass test data")
    train, test = data["train"], data["test"]
    check_task(train, proto)
    x_all, x_test = features_of(train.images), features_of(test.images)
    y_all, y_test = np.asarray(train.labels), np.asarray(test.labels)
    tr, val, sel_text = _selection_split(ctx, train, data)
    rows = np.arange(len(y_all)) if tr is None else np.sort(tr)
    head = ctx.new_head(out_dim(train), list(train.label_names), proto.task)
    val_xy = None
    if opt.selection == "test":
        val_xy = (x_test, y_test)
    elif val is not None:
        val_xy = val
    fit = fit_features(head, x_all, y_all, cfg, val=val_xy, selection=opt.selection, device=device, rows=rows,
                       progress=opt.progress)
    m = task_metrics(proto.task, outputs(head, x_test, device), y_test, list(train.label_names))
    m.pop("score")
    counts = {"train": len(rows), "val": 0 if val_xy is None or opt.selection == "test" else len(val_xy[1]),
              "test": len(y_test)}
    report = ctx.report(m, [*ctx.describe, selection_line(opt, fit, cfg, sel_text, counts)], counts, [fit.best_epoch])
    ctx.finish(head, report, dict(m))
    return ProtocolResult(report, head, [fit])


def _selection_split(ctx: RunContext, train: LabelledImages, data: dict[str, LabelledImages]
                     ) -> tuple[np.ndarray | None, tuple[np.ndarray, np.ndarray] | None, str]:
    """(train indices or None, (x_val, y_val) or None, words)."""
    opt, cfg, features_of = ctx.opt, ctx.cfg, ctx.features_of
    if opt.selection == "holdout":
        tr, va = holdout(train, opt.val_fraction, cfg.seed)
        x = features_of(train.images)
        y = np.asarray(train.labels)
        unit = "subjects' samples" if train.groups is not None else "samples"
        return tr, (x[np.sort(va)], y[np.sort(va)]), (f"a {opt.val_fraction:.0%} validation split held out from "
                                                       f"the training data ({len(va)} {unit}, seed {cfg.seed})")
    if opt.selection == "val":
        if "val" not in data:
            raise ValueError(f"the dataset has no validation split of its own (splits: {sorted(data)}); use "
                             "selection 'holdout'")
        v = data["val"]
        return None, (features_of(v.images), np.asarray(v.labels)), f"the dataset's own validation split ({len(v)})"
    return None, None, ""


def _run_cv(ctx: RunContext, all_data: LabelledImages) -> ProtocolResult:
    """Subject-independent k-fold cross-validation; the saved head is retrained on everything."""
    proto, opt, cfg, device = ctx.proto, ctx.opt, ctx.cfg, ctx.device
    check_task(all_data, proto)
    if all_data.groups is None:
        raise ValueError(f"{all_data.name}: cross-validation needs subject ids; give a test split instead")
    k = proto.cv_folds or 3
    folds = subject_folds(all_data.groups, k)
    x, y = ctx.features_of(all_data.images), np.asarray(all_data.labels)
    pred = np.zeros((len(y), out_dim(all_data)), np.float32)
    fits = []
    for f in range(k):
        test = folds == f
        tr_idx = np.flatnonzero(~test)
        sub = all_data.subset(tr_idx)
        val_xy, fit_idx = None, tr_idx
        if opt.selection == "holdout":
            a, b = holdout(sub, opt.val_fraction, cfg.seed + f)
            fit_idx, val_xy = tr_idx[a], (x[tr_idx[b]], y[tr_idx[b]])
        elif opt.selection == "test":
            val_xy = (x[test], y[test])
        elif opt.selection == "val":
            raise ValueError("cross-validated datasets have no validation split of their own; use 'holdout'")
        head = ctx.new_head(pred.shape[1], list(all_data.label_names), proto.task)
        fit = fit_features(head, x, y, cfg, val=val_xy, selection=opt.selection, device=device, rows=fit_idx,
                           progress=opt.progress)
        pred[test] = outputs(head, x[test], device)
        fits.append(fit)
    m = task_metrics(proto.task, pred, y, list(all_data.label_names))
    m.pop("score")
    epochs = [f.best_epoch for f in fits]
    final_epochs = int(np.median(epochs))
    head = ctx.new_head(pred.shape[1], list(all_data.label_names), proto.task)
    final = fit_features(head, x, y, dataclasses.replace(cfg, epochs=final_epochs), device=device)
    counts = {"train": int((folds != 0).sum()), "val": 0, "test": len(y)}
    sel = {"holdout": f"a {opt.val_fraction:.0%} split of the training subjects of each fold",
           "test": "", "last": ""}[opt.selection]
    line = selection_line(opt, fits[0], cfg, sel, counts).replace(
        f"epoch {fits[0].best_epoch} of", f"epochs {epochs} of")
    lines = [
        *ctx.describe,
        f"Evaluation: {k}-fold subject-independent cross-validation ({len(np.unique(all_data.groups))} subjects); "
        "every sample is predicted by the head whose training folds exclude its subject; metrics on the pooled "
        "predictions.", line,
        f"Saved head: retrained on all {len(y)} samples for {final_epochs} epochs (median selected epoch)."]
    report = ctx.report(m, lines, counts, epochs)
    ctx.finish(head, report, dict(m))
    return ProtocolResult(report, head, [*fits, final])


def _run_verification(ctx: RunContext, pairs: PairList) -> ProtocolResult:
    """k-fold verification accuracy, the cosine threshold of each test fold chosen on the other folds."""
    proto, opt, cfg, device, head_kind = ctx.proto, ctx.opt, ctx.cfg, ctx.device, ctx.st.head_kind
    fs = ctx.compute(pairs.images)
    x, no_face = fs.matrix(ctx.st.feats), ~fs.valid
    missing = np.flatnonzero(no_face)
    if len(missing):
        bad = np.isin(pairs.pairs, missing).any(1)
        ctx.notes.append(f"No face was detected in {len(missing)} of {len(pairs.images)} images; the "
                         f"{int(bad.sum())} pairs using them count as 'different' (wrong for same-identity pairs).")
    ids = np.unique(pairs.folds)
    if len(ids) < 3 and head_kind != "none":
        raise ValueError(f"{pairs.name}: {len(ids)} folds; training a head needs >= 3 (train, val, test)")
    scores = np.zeros(len(pairs), np.float64)
    fits, fold_acc, thresholds = [], [], []
    xt = torch.as_tensor(np.array(x, dtype=np.float32))
    # Pairs with an image whose face was not found never train a head and always score lowest.
    lost = np.isin(pairs.pairs, np.flatnonzero(no_face)).any(1)
    for i, f in enumerate(ids):
        test = pairs.folds == f
        if head_kind == "none":
            head = None
        else:
            train_mask = ~test
            val_xy = None
            if opt.selection == "holdout":
                vf = ids[(i + 1) % len(ids)]  # the next fold is the validation fold
                vmask = pairs.folds == vf
                train_mask = ~test & ~vmask
                val_xy = (pairs.pairs[vmask], pairs.same[vmask])
            elif opt.selection == "test":
                val_xy = (pairs.pairs[test], pairs.same[test])
            elif opt.selection == "val":
                raise ValueError("verification pairs have no validation split of their own; use 'holdout'")
            head = ctx.new_head(proto.head_out, [], "verification")
            train_mask &= ~lost
            if val_xy is not None:
                keep = ~np.isin(val_xy[0], np.flatnonzero(no_face)).any(1)
                val_xy = (val_xy[0][keep], val_xy[1][keep])
            fit = fit_pairs(head, xt, pairs.pairs[train_mask], pairs.same[train_mask], cfg, val=val_xy,
                            selection=opt.selection, device=device, progress=opt.progress)
            fits.append(fit)
        s = pair_scores(head, xt, pairs.pairs, device)
        s[lost] = -np.inf
        scores[test] = s[test]
        thr, _ = metrics.best_threshold(s[~test], pairs.same[~test])
        thresholds.append(thr)
        fold_acc.append(float(((s[test] >= thr) == pairs.same[test]).mean()))
    m = {"accuracy": float(np.mean(fold_acc)), "std": float(np.std(fold_acc)), "fold_accuracy": fold_acc,
         "thresholds": thresholds}
    counts = {"train": int((pairs.folds != ids[0]).sum()), "val": 0, "test": len(pairs)}
    lines = [
        *ctx.describe,
        f"Evaluation: {len(ids)}-fold accuracy; for each test fold the cosine threshold is chosen on the other "
        f"{len(ids) - 1} folds; mean {100 * m['accuracy']:.2f} +- {100 * m['std']:.2f} %."]
    head = None
    epochs: list[int] = []
    if head_kind == "none":
        lines.append("Head: none (cosine similarity of the raw features); nothing is trained or selected.")
        sel = "last"
    else:
        epochs = [ft.best_epoch for ft in fits]
        if opt.selection == "holdout":
            lines.append(f"Model selection: per test fold, epochs {epochs} of {cfg.epochs}, best on the next fold "
                         "(held out from that fold's training folds); each test fold used once.")
        elif opt.selection == "test":
            lines.append(f"Model selection: per fold, epochs {epochs} of {cfg.epochs}, the best ON THE TEST FOLD - "
                         "the reference code's practice. This number is OPTIMISTIC: the test data chose the model.")
        else:
            lines.append(f"Model selection: none (the last of {cfg.epochs} epochs per fold).")
        final_epochs = int(np.median(epochs))
        head = ctx.new_head(proto.head_out, [], "verification")
        fits.append(fit_pairs(head, xt, pairs.pairs[~lost], pairs.same[~lost],
                              dataclasses.replace(cfg, epochs=final_epochs), device=device))
        thr, _ = metrics.best_threshold(pair_scores(head, xt, pairs.pairs[~lost], device), pairs.same[~lost])
        head.spec.threshold = thr
        lines.append(f"Saved head: retrained on all {len(pairs)} pairs for {final_epochs} epochs; threshold "
                     f"{thr:.4f} chosen on all pairs.")
        sel = opt.selection
    report = ctx.report(m, lines, counts, epochs, selection=sel)
    ctx.finish(head, report, {"accuracy": m["accuracy"], "std": m["std"]})
    return ProtocolResult(report, head, fits)


def evaluate_head(model: PCLModel, head: TaskHead, data: LabelledImages | PairList, dataset: str, *,
                  cache: bool = True, cache_dir=None, device=None, batch_size: int = 64,
                  progress: bool = False) -> Report:
    """Evaluate a saved head on a test set (no training); see :func:`run_protocol` for the table."""
    spec = head.spec
    device = resolve_device(device)
    head.to(device).eval()
    fs = extract_features(model, data.images, features=spec.features, input_size=spec.input_size,
                          interpolation=spec.interpolation, detect=spec.detect, batch_size=batch_size, device=device,
                          cache=cache, cache_dir=cache_dir, progress=progress)
    x = fs.matrix(spec.features)
    proto = PROTOCOLS.get(spec.protocol.get("protocol", ""))
    proto = proto or Protocol(spec.name, spec.task, spec.task, spec.input_size, spec.interpolation, spec.kind,
                              HeadTrainConfig(), "", "")
    lines = [f"Head: {spec.name} ({spec.kind}, {'+'.join(spec.features)} at {spec.input_size} px), trained with: "
             + (spec.protocol.get("description", ["(no record)"])[0] if spec.protocol else "(no record)")]
    if spec.protocol.get("test_selected"):
        lines.append("Its epoch was selected ON THE TEST SET of its training run (optimistic).")
    model_info = {"model_id": (getattr(model, "provenance", None) or {}).get("model_id"), "revision": None,
                  FIELD: encoder_digest(model)}
    if isinstance(data, PairList):
        s = pair_scores(head, torch.as_tensor(np.array(x, dtype=np.float32)), data.pairs, device)
        lost = np.isin(data.pairs, np.flatnonzero(~fs.valid)).any(1)
        s[lost] = -np.inf  # no face found: the pair is called "different"
        if lost.any():
            lines.append(f"No face was detected for {int(lost.sum())} pairs; they count as 'different'.")
        res = metrics.verification_accuracy(s, data.same, data.folds)
        m = {"accuracy": res.accuracy, "std": res.std, "fold_accuracy": res.fold_accuracy,
             "thresholds": res.thresholds}
        if spec.threshold is not None:
            m["accuracy_at_saved_threshold"] = float(((s >= spec.threshold) == data.same).mean())
        lines.append(f"Evaluation: {len(res.fold_accuracy)}-fold accuracy, threshold chosen on the other folds.")
        counts = {"test": len(data)}
    else:
        if not fs.valid.all():
            keep = np.flatnonzero(fs.valid)
            lines.append(f"No face was detected in {len(data) - len(keep)} of {len(data)} images; left out.")
            data, x = data.subset(keep), np.asarray(x)[keep]
        if data.task != spec.task:
            raise ValueError(f"head {spec.name!r} is a {spec.task} head; {data.name} is {data.task}")
        m = task_metrics(spec.task, outputs(head, x, device), np.asarray(data.labels), spec.label_names)
        m.pop("score")
        lines.append(f"Evaluation: {data.name}, {len(data)} samples, no training and no selection.")
        counts = {"test": len(data)}
    return make_report(proto, dataset, m, lines, selection="none", counts=counts, epochs=[], model_info=model_info)


__all__ = ["RunContext", "evaluate_head", "run_protocol"]
