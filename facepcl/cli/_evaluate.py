"""``facepcl evaluate``: the paper's protocol for a dataset in one command, or a saved head on a test set.

Examples::

    facepcl evaluate --dataset rafdb --data ~/data/RAF-DB/basic
    facepcl evaluate --dataset fsanet --data ~/data/300W_LP --test-data ~/data/AFLW2000.npz
    facepcl evaluate --dataset lfw --data ~/data/lfw-aligned
    facepcl evaluate --dataset rafdb --data ~/data/RAF-DB/basic --head ./pcl-rafdb

Without ``--head`` the paper's linear-evaluation protocol of the dataset's
task is run (features cached, probe trained with model selection on a split
of the training data, test set used once) and nothing is saved. With
``--head`` a saved head is only tested. Either way the result is printed in
the paper's table layout with the protocol written next to it.
"""

from __future__ import annotations

import argparse

from ._finetune import add_dataset_args, add_training_args, load_data, load_model, print_report, run_full, run_options


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="run the paper's protocol on a dataset, or test a saved head",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_args(p, task_required=False)
    add_training_args(p)
    p.add_argument("--head", dest="head_source", default=None,
                   help="a saved head (head folder, model folder with head-<name>/, or Hub id) to test; no training")
    p.add_argument("--head-name", default=None, help="which head of a folder or repository holding several")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data, protocol, key = load_data(args)
    if args.head_source:
        from ..eval.protocols import evaluate_head
        from ..heads import load_head
        from ..hub import load

        head = load_head(args.head_source, args.head_name, device=args.device)
        model = load(args.model or _model_next_to(args.head_source), revision=args.revision, device=args.device)
        if isinstance(data, dict):
            if "test" not in data:
                raise ValueError(f"dataset {args.dataset!r} has no test split to evaluate a head on")
            data = data["test"]
        report = evaluate_head(model, head, data, key, cache=not args.no_cache, cache_dir=args.cache_dir,
                               device=args.device, batch_size=args.feature_batch_size, progress=args.progress)
    else:
        from ..eval.protocols import run_protocol

        model = load_model(args)
        args.name = None
        opts = run_options(args, protocol)
        if args.mode == "full":
            report = run_full(model, protocol, data, key, opts, args).report
        else:
            report = run_protocol(model, protocol, data, key, opts).report
    print_report(report, args)
    return 0


def _model_next_to(source: str) -> str | None:
    """The encoder saved with a head: the model folder holding it (None: the default model)."""
    from pathlib import Path

    p = Path(source)
    for cand in (p, p.parent):
        if (cand / "config.json").is_file() and (cand / "model.safetensors").is_file():
            return str(cand)
    return None
