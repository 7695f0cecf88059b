"""``facepcl finetune``: train a head (linear probe, MLP, or full fine-tuning) on a dataset and save it.

Example::

    facepcl finetune --task fer --dataset rafdb --data ~/data/RAF-DB/basic --output ./pcl-rafdb

prints the test result in the paper's table layout with the protocol and the
model selection written next to it, and writes ``./pcl-rafdb/`` (the
encoder plus ``head-fer/``), loadable with ``facepcl.load("./pcl-rafdb", head="fer")``.
"""

from __future__ import annotations

import argparse
import json
import sys

from .._utils.paths import refuse_url

TASKS = ("fer", "au", "pose", "verify")
# The names of facepcl.eval.datasets.DATASETS (kept here so `facepcl --help` imports nothing heavy).
DATASET_NAMES = ("bu3dfe", "calfw", "cplfw", "csv", "disfa", "fer2013", "folder", "fsanet", "lfw", "rafdb")


def add_dataset_args(p: argparse.ArgumentParser, *, task_required: bool) -> None:
    """Arguments shared by ``finetune`` and ``evaluate``: the data, the model, features, cache and device."""
    g = p.add_argument_group("data")
    g.add_argument("--task", choices=TASKS, required=task_required,
                   help="fer: expression classification; au: action units (multi-label); pose: head pose "
                   "regression; verify: face verification (default: the dataset's own)")
    g.add_argument("--dataset", required=True, choices=DATASET_NAMES,
                   help="on-disk format: rafdb, fer2013, bu3dfe, fsanet (300W-LP/AFLW2000 .npz), disfa, lfw, cplfw, "
                   "calfw, folder (a folder per class), csv (path,label columns)")
    g.add_argument("--data", required=True, help="dataset folder or file (see docs/evaluation.md)")
    g.add_argument("--test-data", help="separate test data (fsanet: AFLW2000.npz; folder/csv: test folder or csv)")
    g.add_argument("--images", help="image root (RAF-DB aligned folder, BU-3DFE lists, CSV paths, LFW images)")
    g.add_argument("--frames", help="DISFA: folder of extracted video frames")
    g.add_argument("--frame-pattern", default="{subject}/{frame}.jpg",
                   help="DISFA frame path under --frames (default: %(default)s)")
    g.add_argument("--frame-offset", type=int, default=0, help="DISFA: added to label frame numbers (-1: 0-based)")
    g.add_argument("--label-column", type=int, default=2,
                   help="BU-3DFE list field used as the label (2, as the reference; 1: the expression field)")
    g.add_argument("--pairs-file", help="LFW/CPLFW pairs file when not in the dataset folder")
    g.add_argument("--npz-channel-order", choices=("BGR", "RGB"), default="BGR",
                   help="byte order of FSA-Net .npz images (FSA-Net writes BGR; RGB feeds the bytes as stored, "
                   "like the reference)")
    m = p.add_argument_group("model and features")
    m.add_argument("--model", default=None, help="model name, Hub id or folder (default: $FACEPCL_MODEL or pcl-demo)")
    m.add_argument("--revision", default=None, help="Hub revision of the model")
    m.add_argument("--detect", action="store_true",
                   help="detect and align the faces (default: the images are aligned face crops, only resized)")
    m.add_argument("--cache-dir", default=None, help="feature cache folder (default $FACEPCL_HOME/features)")
    m.add_argument("--no-cache", action="store_true", help="compute features without reading or writing the cache")
    m.add_argument("--cache-dtype", choices=("float32", "float16"), default="float32",
                   help="stored feature dtype (float16 halves the disk, e.g. for 300W-LP at 256 px)")
    m.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    m.add_argument("--feature-batch-size", type=int, default=64, help="images per encoder pass")
    o = p.add_argument_group("output")
    o.add_argument("--json", dest="json_out", default=None, help="also write the report as JSON to this file ('-': "
                   "stdout)")
    o.add_argument("--progress", action="store_true", help="progress bars and per-epoch logs on stderr")


def add_training_args(p: argparse.ArgumentParser) -> None:
    """Arguments that change the protocol: head, optimisation, model selection."""
    t = p.add_argument_group("head and training (defaults: the paper protocol of --task)")
    t.add_argument("--features", default=None,
                   help="trunk (the paper's), face, pose, or a concatenation such as face+pose")
    t.add_argument("--head-type", dest="head", choices=("linear", "bn-linear", "mlp", "none"), default=None,
                   help="linear (the paper's FER probe), bn-linear (its pose probe), mlp; none (verify only: "
                   "cosine of raw features)")
    t.add_argument("--hidden", default="512", help="MLP hidden widths, comma-separated (default: %(default)s)")
    t.add_argument("--dropout", type=float, default=0.0, help="MLP dropout")
    t.add_argument("--mode", choices=("probe", "full"), default="probe",
                   help="probe: frozen encoder, cached features; full: fine-tune the encoder too (streams images; "
                   "defaults AdamW lr 1e-3, encoder lr 1e-4, weight decay 0.01, cosine, <= 30 epochs, batch <= 64)")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--lr", type=float, default=None, help="head learning rate")
    t.add_argument("--encoder-lr", type=float, default=None, help="encoder learning rate (--mode full; default lr/10)")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default=None)
    t.add_argument("--weight-decay", type=float, default=None)
    t.add_argument("--schedule", choices=("cosine", "constant"), default=None)
    t.add_argument("--input-size", type=int, default=None, help="network input side in pixels")
    t.add_argument("--augment", choices=("none", "flip"), default="none", help="--mode full: random horizontal flip")
    t.add_argument("--seed", type=int, default=0)
    s = p.add_argument_group("model selection")
    s.add_argument("--selection", choices=("holdout", "val", "test", "last"), default="holdout",
                   help="holdout (default): best epoch on a split held out from the training data; val: on the "
                   "dataset's own validation split (FER-2013 PublicTest); test: on the TEST set, as the reference "
                   "code does (optimistic; labelled in the output); last: no selection")
    s.add_argument("--select-on-test", action="store_true",
                   help="same as --selection test: reproduce the reference's test-set selection (labelled)")
    s.add_argument("--val-fraction", type=float, default=0.1, help="size of the holdout split (default 0.1)")


def add_parser(sub) -> None:
    p = sub.add_parser("finetune", help="train a head (probe, MLP or full fine-tuning) on a dataset and save it",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_args(p, task_required=False)
    add_training_args(p)
    p.add_argument("--output", "-o", default=None,
                   help="folder to write the encoder and head-<name>/ into (loadable with facepcl.load(..., head=))")
    p.add_argument("--name", default=None, help="head name (default: the task, e.g. 'fer')")
    p.set_defaults(func=run)


def load_data(args):
    """(dataset dict or PairList, protocol name, paper key) from parsed arguments."""
    refuse_url(args.data, "--data")
    from ..eval.datasets import open_dataset, paper_key
    from ..eval.datasets._open import DATASETS

    protocol = args.task or DATASETS.get(args.dataset)
    if protocol is None:
        raise ValueError(f"dataset {args.dataset!r} is the user's own data: say which task with --task")
    data = open_dataset(args.dataset, args.data, protocol=protocol, test_data=args.test_data, images=args.images,
                        frames=args.frames, frame_pattern=args.frame_pattern, frame_offset=args.frame_offset,
                        label_column=args.label_column, pairs_file=args.pairs_file,
                        channel_order=args.npz_channel_order)
    return data, protocol, paper_key(args.dataset, args.data, args.test_data)


def load_model(args):
    from ..hub import load

    return load(args.model, revision=args.revision, device=args.device)


def run_options(args, protocol: str):
    """:class:`RunOptions` from parsed arguments (protocol defaults where not given)."""
    import dataclasses

    from ..eval.protocols import PROTOCOLS, RunOptions
    from ..heads._inputs import check_features

    proto = PROTOCOLS[protocol]
    base = proto.train
    if getattr(args, "mode", "probe") == "full":
        # The probes' learning rates (1e-2 for FER) wreck a pretrained encoder; full fine-tuning starts gentler.
        base = dataclasses.replace(base, optimizer="adamw", lr=1e-3, weight_decay=0.01, schedule="cosine",
                                   epochs=min(base.epochs, 30), batch_size=min(base.batch_size, 64),
                                   shuffle=True, encoder_lr=1e-4)
    changes = {k: v for k, v in {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
                                 "optimizer": args.optimizer, "weight_decay": args.weight_decay,
                                 "schedule": args.schedule, "encoder_lr": args.encoder_lr}.items() if v is not None}
    if args.seed != base.seed:
        changes["seed"] = args.seed
    train = dataclasses.replace(base, **changes) if changes else base
    if args.head == "none" and protocol != "verify":
        raise ValueError("--head-type none is only meaningful for --task verify")
    hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
    return RunOptions(features=check_features(args.features) if args.features else None, head=args.head,
                      hidden_dims=hidden, dropout=args.dropout, input_size=args.input_size, train=train,
                      selection="test" if args.select_on_test else args.selection, val_fraction=args.val_fraction,
                      detect=bool(args.detect), cache=not args.no_cache, cache_dir=args.cache_dir,
                      cache_dtype=args.cache_dtype, batch_size_features=args.feature_batch_size, device=args.device,
                      progress=args.progress, name=getattr(args, "name", None))


def print_report(report, args) -> None:
    print(report.table())
    if args.json_out:
        text = json.dumps(report.to_dict(), indent=2)
        if args.json_out == "-":
            print(text)
        else:
            with open(args.json_out, "w", encoding="utf-8") as f:
                f.write(text + "\n")


def run(args: argparse.Namespace) -> int:
    refuse_url(args.output, "--output")
    from ..eval.protocols import run_protocol

    data, protocol, key = load_data(args)
    model = load_model(args)
    opts = run_options(args, protocol)
    if args.mode == "full":
        result = run_full(model, protocol, data, key, opts, args)
    else:
        result = run_protocol(model, protocol, data, key, opts)
    print_report(result.report, args)
    if args.output:
        if result.head is None:
            print("facepcl finetune: --head-type none trains nothing; no head saved", file=sys.stderr)
            return 0
        from ..heads import save_head
        from ..hub import save_pretrained

        save_pretrained(model, args.output)
        folder = save_head(result.head, args.output)
        print(f"\nSaved encoder and head to {args.output} ({folder.name}); load with "
              f"facepcl.load({args.output!r}, head={result.head.spec.name!r})")
    return 0


def run_full(model, protocol, data, key, opts, args):
    from ..eval.protocols import run_finetune

    return run_finetune(model, protocol, data, key, opts, augment=args.augment)
