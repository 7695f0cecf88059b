"""Full fine-tuning runs: the encoder and a head trained together end to end, then tested once.

Same data, selection and report as linear evaluation (:mod:`facepcl.eval._linear`);
images are streamed (no feature cache), and the model changes in place.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..heads import metrics
from ..heads._spec import TaskHead
from ..heads._train import HeadTrainConfig, task_metrics
from ..model import PCLModel
from ._protocol import (
    PROTOCOLS,
    SELECTIONS,
    Protocol,
    ProtocolResult,
    Report,
    RunOptions,
    check_task,
    encoder_record,
    features_text,
    holdout,
    make_report,
    model_summary,
    out_dim,
    protocol_record,
    selection_line,
    settings,
)
from .datasets import LabelledImages, PairList


def _finish_full(model: PCLModel, head: TaskHead, proto: Protocol, opt: RunOptions, dataset: str, m: dict, *,
                 spec_metrics: dict, lines: list[str], counts: dict, epochs: list[int]) -> Report:
    """The report of a full fine-tuning, and the records it leaves on the head (fine-tuned encoder, protocol)."""
    model_info = model_summary(model)
    report = make_report(proto, dataset, m, lines, selection=opt.selection, counts=counts, epochs=epochs,
                         model_info=model_info)
    head.spec.encoder = encoder_record(model, model_info, finetuned=True)
    head.spec.metrics = spec_metrics
    head.spec.protocol = protocol_record(proto, opt, opt.train or proto.train, dataset, report)
    head.spec.protocol["mode"] = "full"
    return report


def _finetune_verification(model: PCLModel, proto: Protocol, pairs: PairList, dataset: str, opt: RunOptions,
                           augment: str) -> ProtocolResult:
    """k-fold verification with the encoder fine-tuned per fold (from the same starting weights each time)."""
    from ..heads._finetune import FineTuner

    if proto.task != "verification":
        raise ValueError(f"{pairs.name} holds verification pairs; protocol {proto.name!r} is {proto.task}")
    if opt.selection == "val":
        raise ValueError("verification pairs have no validation split of their own; use 'holdout'")
    ids = np.unique(pairs.folds)
    if len(ids) < 3:
        raise ValueError(f"{pairs.name}: {len(ids)} folds; fine-tuning needs >= 3 (train, val, test)")
    st = settings(proto, opt)
    cfg = st.cfg
    if st.head_kind == "none":
        raise ValueError("full fine-tuning trains a head; --head-type none only scores frozen features")
    start = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}

    def tuner(c: HeadTrainConfig) -> FineTuner:
        model.encoder.load_state_dict(start)  # every fold starts from the pretrained encoder
        head = st._replace(cfg=c).head(proto, opt, "verification", proto.head_out, [])
        return FineTuner(model, head, c, augment=augment, device=opt.device)

    fits, fold_acc, thresholds = [], [], []
    for i, f in enumerate(ids):
        test = pairs.folds == f
        train_mask, val_xy = ~test, None
        if opt.selection == "holdout":
            vmask = pairs.folds == ids[(i + 1) % len(ids)]  # the next fold is the validation fold
            train_mask = ~test & ~vmask
            val_xy = (pairs.pairs[vmask], pairs.same[vmask])
        elif opt.selection == "test":
            val_xy = (pairs.pairs[test], pairs.same[test])
        t = tuner(cfg)
        fits.append(t.fit_pairs(pairs.images, pairs.pairs[train_mask], pairs.same[train_mask], val=val_xy,
                                selection=opt.selection, progress=opt.progress))
        s = t.pair_scores(pairs.images, pairs.pairs)
        thr, _ = metrics.best_threshold(s[~test], pairs.same[~test])
        thresholds.append(thr)
        fold_acc.append(float(((s[test] >= thr) == pairs.same[test]).mean()))
    m = {"accuracy": float(np.mean(fold_acc)), "std": float(np.std(fold_acc)), "fold_accuracy": fold_acc,
         "thresholds": thresholds}
    epochs = [ft.best_epoch for ft in fits]
    final_epochs = int(np.median(epochs))
    t = tuner(dataclasses.replace(cfg, epochs=final_epochs))
    fits.append(t.fit_pairs(pairs.images, pairs.pairs, pairs.same, selection="last", progress=opt.progress))
    head = t.head
    head.spec.threshold, _ = metrics.best_threshold(t.pair_scores(pairs.images, pairs.pairs), pairs.same)
    sel = {"holdout": "best on the next fold (held out from that fold's training folds)",
           "test": "the best ON THE TEST FOLD - the reference code's practice; this number is OPTIMISTIC",
           "last": "none (the last epoch)"}[opt.selection]
    lines = [
        f"Protocol: {proto.title}, FULL FINE-TUNING (encoder and head trained together, from the same pretrained "
        f"weights for every fold; not the paper's linear evaluation); {features_text(st.feats)} at {st.size} px "
        f"({st.interp} resize); head {st.head_kind} ({st.in_dim} -> {proto.head_out}).",
        f"Training: {cfg.optimizer}, head lr {cfg.lr:g}, encoder lr {t.encoder_lr:g}, weight decay "
        f"{cfg.weight_decay:g}, {cfg.schedule} schedule, {cfg.epochs} epochs, batch {cfg.batch_size} pairs, "
        f"cosine-embedding loss (margin {cfg.margin:g}), augmentation {augment}, seed {cfg.seed}.",
        f"Evaluation: {len(ids)}-fold accuracy; for each test fold the cosine threshold is chosen on the other "
        f"{len(ids) - 1} folds; mean {100 * m['accuracy']:.2f} +- {100 * m['std']:.2f} %.",
        f"Model selection: per test fold, epochs {epochs} of {cfg.epochs}, {sel}.",
        f"Saved encoder and head: fine-tuned on all {len(pairs)} pairs for {final_epochs} epochs; threshold "
        f"{head.spec.threshold:.4f} chosen on all pairs.",
    ]
    counts = {"train": int((pairs.folds != ids[0]).sum()), "val": 0, "test": len(pairs)}
    summary = {"accuracy": m["accuracy"], "std": m["std"]}
    report = _finish_full(model, head, proto, opt, dataset, m, spec_metrics=summary, lines=lines, counts=counts,
                          epochs=epochs)
    return ProtocolResult(report, head, fits)


def run_finetune(model: PCLModel, protocol: str | Protocol, data: dict[str, LabelledImages], dataset: str,
                 options: RunOptions | None = None, *, augment: str = "none") -> ProtocolResult:
    """Fine-tune the encoder and a head end to end (images streamed), then test once.

    Same data, selection and report as :func:`run_protocol`; the encoder
    learns with ``options.train.encoder_lr`` (default lr / 10). The model is
    changed in place; the head's ``encoder`` record says so.
    """
    from ..heads._finetune import FineTuner

    proto = PROTOCOLS[protocol] if isinstance(protocol, str) else protocol
    opt = options or RunOptions()
    if opt.selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {opt.selection!r}")
    if opt.detect:
        raise ValueError("full fine-tuning streams images that are already aligned crops; leave out --detect "
                         "(Python: RunOptions(detect=False))")
    if isinstance(data, PairList):
        return _finetune_verification(model, proto, data, dataset, opt, augment)
    if not isinstance(data, dict) or "train" not in data or "test" not in data:
        raise ValueError("full fine-tuning needs train and test splits of labelled images, or verification "
                         "pairs (not cross-validated sets)")
    train, test = data["train"], data["test"]
    check_task(train, proto)
    st = settings(proto, opt)
    cfg = st.cfg
    head = st.head(proto, opt, proto.task, out_dim(train), list(train.label_names))
    tuner = FineTuner(model, head, cfg, augment=augment, device=opt.device)
    fit_set, val_set, sel_text = train, None, ""
    if opt.selection == "holdout":
        a, b = holdout(train, opt.val_fraction, cfg.seed)
        fit_set, val_set = train.subset(a), train.subset(b)
        sel_text = (f"a {opt.val_fraction:.0%} validation split held out from the training data ({len(b)} samples, "
                    f"seed {cfg.seed})")
    elif opt.selection == "val":
        if "val" not in data:
            raise ValueError("the dataset has no validation split of its own; use selection 'holdout'")
        val_set, sel_text = data["val"], f"the dataset's own validation split ({len(data['val'])})"
    elif opt.selection == "test":
        val_set = test
    fit = tuner.fit(fit_set, val_set, selection=opt.selection, progress=opt.progress)
    m = task_metrics(proto.task, tuner.predict(test), np.asarray(test.labels), list(train.label_names))
    m.pop("score")
    counts = {"train": len(fit_set), "val": 0 if val_set is None or opt.selection == "test" else len(val_set),
              "test": len(test)}
    lines = [
        f"Protocol: {proto.title}, FULL FINE-TUNING (encoder and head trained together; not the paper's linear "
        f"evaluation); {features_text(st.feats)} at {st.size} px ({st.interp} resize); head {st.head_kind} "
        f"({st.in_dim} -> {head.spec.out_dim}).",
        f"Training: {cfg.optimizer}, head lr {cfg.lr:g}, encoder lr {tuner.encoder_lr:g}, weight decay "
        f"{cfg.weight_decay:g}, {cfg.schedule} schedule, {cfg.epochs} epochs, batch {cfg.batch_size}, {proto.loss}, "
        f"augmentation {augment}, seed {cfg.seed}.",
        selection_line(opt, fit, cfg, sel_text, counts),
    ]
    report = _finish_full(model, head, proto, opt, dataset, m, spec_metrics=dict(m), lines=lines, counts=counts,
                          epochs=[fit.best_epoch])
    return ProtocolResult(report, head, [fit])


__all__ = ["run_finetune"]
