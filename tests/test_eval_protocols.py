"""The protocols end to end on small datasets in their exact on-disk formats, the CLI, and the examples."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from facepcl.cli import main as cli
from facepcl.eval import demo
from facepcl.eval.datasets import LabelledImages, PathImages, read_disfa, read_fsanet_npz, read_lfw, read_rafdb
from facepcl.eval.protocols import PROTOCOLS, RunOptions, holdout, run_finetune, run_protocol
from facepcl.heads import load_head

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _opts(tmp_path, protocol, epochs, **kw):
    return RunOptions(input_size=kw.pop("input_size", 32), cache_dir=tmp_path / "features", device="cpu",
                      train=dataclasses.replace(PROTOCOLS[protocol].train, epochs=epochs), **kw)


@pytest.fixture(scope="module")
def rafdb_dir(tmp_path_factory):
    return demo.make_rafdb(tmp_path_factory.mktemp("raf") / "basic", per_class=8, size=48)


@pytest.mark.slow
def test_fer_protocol_learns_a_visible_task_and_reports_honestly(random_pcl_model, rafdb_dir, tmp_path):
    data = read_rafdb(rafdb_dir)
    res = run_protocol(random_pcl_model, "fer", data, "rafdb", _opts(tmp_path, "fer", 30))
    rep = res.report
    assert rep.metrics["accuracy"] >= 0.9  # the class is a coloured block: separable even on random features
    assert rep.counts == {"train": 49, "val": 7, "test": 28}  # 7 classes x 8, one per class held out
    table = rep.table()
    assert "| RAF-DB  | acc %  | 71.06" in table
    assert "74.47" in table
    assert f"{100 * rep.metrics['accuracy']:.2f}" in table
    assert "held out from the training data" in table
    assert "the test set (28) was used once" in table
    assert "TEST" not in table
    assert "Settings: CHANGED" in table  # 30 epochs and 32 px are not the paper's
    spec = res.head.spec
    assert spec.in_dim == 128 * 2 * 2
    assert spec.out_dim == 7
    assert spec.kind == "linear"
    assert spec.protocol["selection"] == "holdout"
    assert spec.protocol["test_selected"] is False
    assert spec.metrics["accuracy"] == rep.metrics["accuracy"]


def test_select_on_test_is_labelled(random_pcl_model, rafdb_dir, tmp_path):
    res = run_protocol(random_pcl_model, "fer", read_rafdb(rafdb_dir), "rafdb",
                       _opts(tmp_path, "fer", 5, selection="test"))
    assert res.report.test_selected
    table = res.report.table()
    assert "this run (TEST-SELECTED)" in table
    assert "ON THE TEST SET" in table
    assert "OPTIMISTIC" in table
    assert res.head.spec.protocol["test_selected"] is True
    assert res.fits[0].best_epoch == int(np.argmax([h["score"] for h in res.fits[0].history])) + 1


def test_holdout_is_stratified_disjoint_and_subject_aware():
    labels = np.repeat(np.arange(3), 10)
    d = LabelledImages("x", PathImages([f"{i}.png" for i in range(30)]), labels, "classification", ["a", "b", "c"])
    tr, va = holdout(d, 0.2, 0)
    assert not set(tr) & set(va)
    assert len(tr) + len(va) == 30
    assert np.bincount(labels[va]).tolist() == [2, 2, 2]
    groups = np.repeat(np.array(["SN001", "SN002", "SN003", "SN004", "SN005"]), 6)
    g = dataclasses.replace(d, groups=groups, task="multilabel", labels=np.zeros((30, 2), np.float32))
    tr, va = holdout(g, 0.2, 0)
    assert not set(groups[tr]) & set(groups[va])
    assert len(set(groups[va])) == 1


def test_pose_protocol_reports_four_maes(random_pcl_model, tmp_path):
    demo.make_fsanet(tmp_path / "300W_LP" / "AFW.npz", n=60, seed=1, size=32)
    demo.make_fsanet(tmp_path / "AFLW2000.npz", n=20, seed=2, size=32, extreme=2)
    data = {"train": read_fsanet_npz(tmp_path / "300W_LP"), "test": read_fsanet_npz(tmp_path / "AFLW2000.npz")}
    assert len(data["test"]) == 20
    res = run_protocol(random_pcl_model, "pose", data, "aflw2000", _opts(tmp_path, "pose", 5))
    rep = res.report
    assert rep.metric_label == "MAE deg (yaw/pitch/roll/mean)"
    parts = [float(v) for v in rep.primary.split("/")]
    assert parts[3] == pytest.approx(np.mean(parts[:3]), abs=0.01)
    assert "9.86/16.59/10.62/12.36" in rep.table()
    assert "BatchNorm1d(512) + Linear(512, 3)" in rep.table()
    assert res.head.spec.label_names == ["yaw", "pitch", "roll"]


@pytest.mark.slow
def test_verification_protocol_ten_folds(random_pcl_model, tmp_path):
    pairs = read_lfw(demo.make_lfw(tmp_path / "lfw", sets=10, per=3, size=32))
    raw = run_protocol(random_pcl_model, "verify", pairs, "lfw", _opts(tmp_path, "verify", 1, head="none"))
    assert raw.head is None
    assert len(raw.report.metrics["fold_accuracy"]) == 10
    assert raw.report.metrics["accuracy"] >= 0.9  # identities are fixed colour mosaics
    assert "Head: none" in raw.report.table()
    trained = run_protocol(random_pcl_model, "verify", pairs, "lfw", _opts(tmp_path, "verify", 2))
    assert len(trained.fits) == 11  # one per fold plus the saved head
    assert trained.head.spec.threshold is not None
    assert trained.head.spec.task == "verification"
    assert "best on the next fold" in trained.report.table()


@pytest.mark.slow
def test_verification_full_finetuning_restarts_every_fold(tmp_path, monkeypatch):
    import torch

    from facepcl import PCLConfig, PCLModel
    from facepcl.heads import _finetune

    starts = []  # the encoder each fold's tuner starts from
    init = _finetune.FineTuner.__init__

    def record(self, model, *args, **kw):
        starts.append(torch.cat([v.flatten().float() for v in model.encoder.state_dict().values()]))
        init(self, model, *args, **kw)

    monkeypatch.setattr(_finetune.FineTuner, "__init__", record)

    torch.manual_seed(7)
    model = PCLModel(PCLConfig(name="ft")).eval()
    start = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    pairs = read_lfw(demo.make_lfw(tmp_path / "lfw", sets=3, per=2, size=32))
    res = run_finetune(model, "verify", pairs, "lfw", _opts(tmp_path, "verify", 1, detect=False))
    m = res.report.metrics
    assert len(m["fold_accuracy"]) == 3
    assert m["accuracy"] == pytest.approx(np.mean(m["fold_accuracy"]))
    assert len(res.fits) == 4  # one per fold plus the saved encoder and head
    table = res.report.table()
    assert "FULL FINE-TUNING" in table
    assert "best on the next fold" in table
    assert res.head.spec.threshold is not None
    assert res.head.spec.protocol["mode"] == "full"
    assert res.head.spec.encoder["finetuned"] is True
    assert any(not torch.equal(start[k], v) for k, v in model.encoder.state_dict().items())
    first = torch.cat([v.flatten().float() for v in start.values()])
    assert len(starts) == 4
    assert all(torch.equal(s, first) for s in starts)
    with pytest.raises(ValueError, match="holdout"):
        run_finetune(model, "verify", pairs, "lfw", _opts(tmp_path, "verify", 1, detect=False, selection="val"))


def test_au_protocol_subject_cross_validation(random_pcl_model, tmp_path):
    labels, frames = demo.make_disfa(tmp_path / "disfa", subjects=3, frames=8, size=32)
    data = {"all": read_disfa(labels, frames)}
    res = run_protocol(random_pcl_model, "au", data, "disfa", _opts(tmp_path, "au", 3))
    m = res.report.metrics
    assert sorted(k for k in m if k.startswith("f1_AU")) == sorted(f"f1_AU{a}" for a in (1, 2, 4, 6, 9, 12, 25, 26))
    assert m["f1_mean"] == pytest.approx(np.mean([m[f"f1_AU{a}"] for a in (1, 2, 4, 6, 9, 12, 25, 26)]))
    assert "3-fold subject-independent" in res.report.table()
    assert len(res.fits) == 4
    assert "| DISFA   | mean F1 (8 labels)" in res.report.table()


@pytest.mark.slow
def test_cli_finetune_then_evaluate_the_saved_head(random_model_dir, rafdb_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FACEPCL_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    common = ["--dataset", "rafdb", "--data", str(rafdb_dir), "--device", "cpu", "--input-size", "32"]
    assert cli(["finetune", "--task", "fer", *common, "--model", str(random_model_dir), "--epochs", "10",
                "--features", "face+pose", "--select-on-test", "-o", str(out), "--json", str(tmp_path / "a.json")]) == 0
    printed = capsys.readouterr().out
    assert "TEST-SELECTED" in printed
    assert "face F_f+pose F_p at 32 px" in printed
    first = json.loads((tmp_path / "a.json").read_text())
    assert first["test_selected"] is True
    head = load_head(out, "fer")
    assert head.spec.features == ["face", "pose"]
    assert head.spec.in_dim == 1024
    assert (out / "config.json").is_file()
    assert (out / "head-fer" / "head.safetensors").is_file()
    assert cli(["evaluate", *common, "--head", str(out), "--json", str(tmp_path / "b.json")]) == 0
    second = json.loads((tmp_path / "b.json").read_text())
    assert second["metrics"]["accuracy"] == first["metrics"]["accuracy"]  # the same head on the same test set
    assert "no training and no selection" in capsys.readouterr().out


def test_cli_reports_missing_files(tmp_path, capsys, random_model_dir):
    code = cli(["evaluate", "--dataset", "rafdb", "--data", str(tmp_path / "none"), "--model", str(random_model_dir)])
    assert code == 1
    assert "RAF-DB label list does not exist" in capsys.readouterr().err


def _run_example(name, argv):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(argv)


@pytest.mark.slow
@pytest.mark.parametrize("name,argv", [
    ("finetune_expression", ["--demo", "--epochs", "5"]),
    ("evaluate_head_pose", ["--demo", "--epochs", "3"]),
    ("verify_pairs", ["--demo", "--no-head"]),
    ("au_detection", ["--demo", "--epochs", "3"]),
])
def test_examples_run_in_demo_mode(name, argv, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("FACEPCL_HOME", str(tmp_path))
    assert _run_example(name, argv) == 0
    assert "| dataset" in capsys.readouterr().out
