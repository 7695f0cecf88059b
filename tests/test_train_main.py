"""``facepcl.train.main`` end to end on real face frames, the CLI entry points, and the import guard."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

import facepcl
from facepcl.train import main
from facepcl.train.augment import make_inputs
from facepcl.train.config import load_config
from facepcl.train.data import PCLFrames, StepSampler, VideoTracks, collate
from facepcl.train.objective import PCLObjective
from facepcl.train.trainer import build_model, mixing_rng

from ._train_helpers import TINY


def _fixed_batch_losses(model, cfg, inputs) -> list[float]:
    """rec, orth, face, pose of one fixed batch with fixed mixing (train-mode BatchNorm, as in training)."""
    objective = PCLObjective(model, cfg)
    model.train()
    with torch.no_grad():
        a = objective("rec", **inputs["rec"])
        b = objective("face", **inputs["face"],
                      mixing=objective.face_loss.draw(inputs["face"]["views"].shape[0], mixing_rng(0, 1, 0, 0)))
        c = objective("pose", **inputs["pose"], mixing=objective.pose_loss.draw(
            inputs["pose"]["anchors"].shape[0] // 2, cfg.batch.pose_negatives, mixing_rng(0, 2, 0, 0)))
    return [a["rec"].item(), a["orth"].item(), b["face"].item(), c["pose"].item()]


@pytest.mark.slow
@pytest.mark.photos
def test_main_learns_on_real_face_frames(check_run) -> None:
    """The model of conftest's check_run (the bundled check recipe on real faces, 64 steps, exported) learnt:
    its logged reconstruction falls, and its losses on one fixed batch are below those of its initial weights.
    (test_train_check.py tests the same run's verdict; test_bf16_autocast_run covers image logging and
    channels_last.)"""
    face_root = check_run.root
    assert len(VideoTracks(face_root)) == 14  # 2 filmed people + 12 people in photos
    args = ["check", f"data.root={face_root}"]
    cfg = load_config(args[0], args[1:])
    rows = [json.loads(ln) for ln in (check_run.run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, cfg.train.max_steps + 1))
    assert all(math.isfinite(v) for r in rows for v in r.values())
    first, last = rows[:5], rows[-5:]
    assert sum(r["rec"] for r in last) < 0.7 * sum(r["rec"] for r in first)

    # The total loss on one fixed batch (fixed frames, augmentations, noise and mixing) goes down from the
    # initial weights (the run's seed) to the trained ones.
    cfg = load_config(args[0], [*args[1:], "batch.rec=8", "batch.face=16", "batch.pose=4", "batch.pose_negatives=8"])
    source = VideoTracks(face_root)
    dataset = PCLFrames(source, cfg)
    requests = next(iter(StepSampler(len(source), (8, 16, 4), 1, 99, 1, 0, (1, 0), 1)))
    inputs = make_inputs(collate([dataset[r] for r in requests]), cfg, torch.device("cpu"))
    torch.manual_seed(cfg.seed)
    before = _fixed_batch_losses(build_model(cfg), cfg, inputs)
    trained = facepcl.load(check_run.run / "model", components="all")
    after = _fixed_batch_losses(trained, cfg, inputs)
    assert sum(after) < sum(before) - 0.3, (before, after)
    assert after[0] < 0.7 * before[0]


def test_config_overrides_are_typed_and_checked(tmp_path) -> None:
    cfg = load_config("pcl", ["data.root=/d", "optim.lr=3e-4", "batch.rec=64", "optim.cosine_epochs=null",
                              "augment.jitter=[0.4, 0.4, 0.4, 0.1]", "train.channels_last=auto"])
    assert cfg.optim.lr == 3e-4
    assert isinstance(cfg.optim.lr, float)
    assert cfg.batch.rec == 64
    assert cfg.optim.cosine_epochs is None
    assert cfg.augment.jitter == [0.4, 0.4, 0.4, 0.1]
    # the paper's recipe
    paper = load_config("pcl")
    assert (paper.batch.rec, paper.batch.face, paper.batch.pose, paper.batch.pose_negatives) == (256, 256, 10, 100)
    assert (paper.optim.lr, paper.optim.weight_decay, paper.loss.temperature, paper.loss.beta_alpha) == (
        1e-4, 1e-3, 0.07, 1.6)
    assert (paper.loss.noise_std, paper.dwa.temperature, paper.seed, paper.data.image_size) == (0.4, 2.0, 1234, 64)
    assert paper.loss.pose_negatives == "per_sample"
    assert paper.loss.orthogonality
    for bad, match in (("batch.recs=3", "unknown key"), ("batch.rec=many", "integer"), ("precision=fp8", "precision"),
                       ("loss.pose_negatives=grouped", "pose_negatives"), ("data.image_size=100", "64"),
                       ("norm", "key=value"), ("loss.temperature=-1", "positive")):
        with pytest.raises(ValueError, match=match):
            load_config("pcl", [bad])
    (tmp_path / "bad.yaml").write_text("batch:\n  rec: 8\n  typo: 1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*typo"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError, match="bundled"):
        load_config("no-such-recipe")


def test_print_config_and_cli_help(capsys) -> None:
    from facepcl.cli import main as cli

    assert cli(["train", "pcl", "data.root=/d", "batch.pose=20", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "pose: 20" in text
    assert "root: /d" in text

    with pytest.raises(SystemExit) as e:
        cli(["train", "--help"])
    assert e.value.code == 0
    assert "torchrun" in capsys.readouterr().out


def test_cli_reports_bad_config_as_error(tmp_path, capsys) -> None:
    from facepcl.cli import main as cli

    assert cli(["train", "pcl", f"data.root={tmp_path / 'missing'}", f"output_dir={tmp_path / 'o'}",
                "precision=fp32"]) == 1
    assert "no such folder" in capsys.readouterr().err


def test_inference_never_imports_training_and_guard_names_the_extra() -> None:
    code = ("import sys, facepcl, facepcl.cli, facepcl.hub; "
            "assert not any(m.startswith('facepcl.train') for m in sys.modules), 'train imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    guard = ("import sys; sys.modules['yaml'] = None\n"
             "from facepcl.train.losses import FaceContrastiveLoss\n"  # pure torch: no extra needed
             "try:\n    from facepcl.train import load_config\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", guard], capture_output=True, text=True, check=True).stdout
    assert 'pip install "facepcl[train]"' in out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_retain_cpu_memory_applies_on_glibc() -> None:
    code = "from facepcl.train._malloc import retain_freed_memory as r; assert r() and r()"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_precision_choices() -> None:
    from facepcl.runtime._accel import native_bf16
    from facepcl.train.trainer import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16("cpu") else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(ValueError, match="fp16 is for CUDA"):
        resolve_precision("fp16", cpu)


@pytest.mark.slow
def test_bf16_autocast_run(tmp_path) -> None:
    from ._train_helpers import make_video_tree

    root = make_video_tree(tmp_path / "data", identities=2, videos=1, frames=2)
    args = ["smoke", f"data.root={root}", *TINY, "precision=bf16", "train.channels_last=true", "train.max_steps=2",
            "log.image_every_steps=2", f"output_dir={tmp_path / 'run'}"]
    assert main(args) == 0
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert (tmp_path / "run" / "images" / "recon-00000002.png").is_file()
    assert len(rows) == 2
    assert all(math.isfinite(v) for r in rows for v in r.values())
    # weights stay float32 under autocast, and the export loads
    model = facepcl.load(tmp_path / "run" / "model", components="all")
    assert all(p.dtype == torch.float32 for p in model.parameters())
