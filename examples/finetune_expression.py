"""Expression recognition (FER) with a PCL encoder: the paper's linear probe, or full fine-tuning.

Real data (RAF-DB's own layout: EmoLabel/list_patition_label.txt + Image/aligned/)::

    python examples/finetune_expression.py --data ~/data/RAF-DB/basic --model ORG/NAME --output ./pcl-rafdb

A self-contained run on a tiny generated RAF-DB-format dataset and a random-weight model::

    python examples/finetune_expression.py --demo

The same as one command: ``facepcl finetune --task fer --dataset rafdb --data DIR --output OUT``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import facepcl
from facepcl.eval.datasets import read_rafdb
from facepcl.eval.protocols import RunOptions, run_finetune, run_protocol
from facepcl.heads import HeadTrainConfig, save_head


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="RAF-DB 'basic' folder")
    p.add_argument("--model", default=None, help="model name, Hub id or folder")
    p.add_argument("--output", default=None, help="folder to save the encoder and head-fer/ into")
    p.add_argument("--full", action="store_true", help="fine-tune the encoder too (default: linear probe)")
    p.add_argument("--epochs", type=int, default=None, help="default: the paper's 300 (probe) / 30 (full)")
    p.add_argument("--demo", action="store_true", help="generate a tiny dataset and a random-weight model")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.demo:
            from facepcl.eval import demo

            args.data = str(demo.make_rafdb(Path(tmp) / "raf", per_class=8))
            facepcl.PCLModel(facepcl.PCLConfig()).save_pretrained(Path(tmp) / "model")
            args.model, args.epochs = str(Path(tmp) / "model"), args.epochs or 20
        if not args.data:
            p.error("--data is required (or --demo)")
        data = read_rafdb(args.data)
        model = facepcl.load(args.model)
        # The demo runs at 64 px to stay quick; the paper's FER protocol uses 100 px.
        options = RunOptions(cache_dir=Path(tmp) / "features" if args.demo else None,
                             input_size=64 if args.demo else None)
        if args.full:
            options.train = HeadTrainConfig("adamw", 1e-3, 0.01, "cosine", args.epochs or 30, 32, encoder_lr=1e-4)
            result = run_finetune(model, "fer", data, "rafdb", options, augment="flip")
        else:
            if args.epochs:
                import dataclasses

                from facepcl.eval.protocols import PROTOCOLS

                options.train = dataclasses.replace(PROTOCOLS["fer"].train, epochs=args.epochs)
            result = run_protocol(model, "fer", data, "rafdb", options)
        print(result.report.table())
        if args.output:
            model.save_pretrained(args.output)
            save_head(result.head, args.output)
            loaded = facepcl.heads.load_with_head(args.output, head="fer")
            print(f"saved to {args.output}; reloaded heads: {sorted(loaded.task_heads)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
