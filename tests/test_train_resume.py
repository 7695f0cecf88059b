"""Checkpoints: a stopped and resumed run gives the same numbers as an uninterrupted one; atomic writes;
export to the Hub format; DWA weights in a real run follow the formula."""

from __future__ import annotations

import json
import math

import pytest
import torch

import facepcl
from facepcl.errors import CheckpointError
from facepcl.train import main
from facepcl.train.checkpoint import CheckpointDir, export_checkpoint, load_checkpoint

from ._train_helpers import TINY, make_video_tree


def _rows(folder) -> list[dict]:
    return [json.loads(ln) for ln in (folder / "metrics.jsonl").read_text().splitlines()]


def _numbers(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("time_s", "cpu_s")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    root = make_video_tree(tmp / "data", identities=3, videos=2, frames=3)
    args = ["smoke", f"data.root={root}", *TINY, "data.samples_per_epoch=4", "train.epochs=3",
            "checkpoint.every_epochs=null", "checkpoint.keep_last=0"]
    straight, stopped = tmp / "straight", tmp / "stopped"
    assert main([*args, f"output_dir={straight}"]) == 0
    assert main([*args, f"output_dir={stopped}", "train.max_steps=3"]) == 0  # stops mid-epoch 2
    first_part = _rows(stopped)
    assert main([*args, f"output_dir={stopped}"]) == 0  # checkpoint.resume=auto
    return {"straight": straight, "stopped": stopped, "first_part": first_part, "root": root}


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(runs) -> None:
    a, b = _rows(runs["straight"]), _rows(runs["stopped"])
    assert [r["step"] for r in a] == [1, 2, 3, 4, 5, 6]
    assert [_numbers(r) for r in b] == [_numbers(r) for r in a]  # bit-identical losses, weights, lr
    assert [_numbers(r) for r in runs["first_part"]] == [_numbers(r) for r in a[:3]]
    ca = load_checkpoint(CheckpointDir(runs["straight"] / "checkpoints").latest())
    cb = load_checkpoint(CheckpointDir(runs["stopped"] / "checkpoints").latest())
    assert ca["position"] == cb["position"] == {"epoch": 4, "iteration": 0, "global_step": 6}
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]), k
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert ca["scheduler"] == cb["scheduler"]
    assert ca["dwa"] == cb["dwa"]
    # the stopped run wrote its checkpoint at step 3 and continued from it
    assert (runs["stopped"] / "checkpoints" / "step-00000003.pt").is_file()


@pytest.mark.slow
def test_dwa_weights_and_cosine_in_a_real_run(runs) -> None:
    rows = _rows(runs["straight"])
    mean = {e: [sum(r[k] for r in rows if r["epoch"] == e) / 2 for k in ("face", "pose")] for e in (1, 2)}
    w = [mean[2][i] / mean[1][i] for i in range(2)]
    e = [math.exp(x / 2.0) for x in w]
    for r in rows:
        if r["epoch"] < 3:
            assert (r["w_face"], r["w_pose"]) == (1.0, 1.0)
        else:
            assert r["w_face"] == pytest.approx(2 * e[0] / sum(e), rel=1e-9)
            assert r["w_pose"] == pytest.approx(2 * e[1] / sum(e), rel=1e-9)
        # cosine over train.epochs = 3, stepped per epoch, lr 1e-3 (smoke)
        assert r["lr"] == pytest.approx(1e-3 * (1 + math.cos(math.pi * (r["epoch"] - 1) / 3)) / 2, rel=1e-9)
    assert rows[-1]["loss"] == pytest.approx(rows[-1]["rec"] + rows[-1]["orth"] + rows[-1]["w_face"] *
                                             rows[-1]["face"] + rows[-1]["w_pose"] * rows[-1]["pose"], rel=1e-9)


@pytest.mark.slow
def test_export_is_loadable_and_matches_the_checkpoint(runs, tmp_path) -> None:
    ckpt = load_checkpoint(CheckpointDir(runs["straight"] / "checkpoints").latest())
    model = facepcl.load(runs["straight"] / "model", components="all")
    assert model.config.components == ["encoder", "face_head", "pose_head", "decoder"]
    assert "facepcl train" in model.config.source
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["model"][k]), k
    again = export_checkpoint(CheckpointDir(runs["straight"] / "checkpoints").latest(), tmp_path / "again")
    m2 = facepcl.load(again)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x).trunk, m2(x).trunk)
    # the resolved config sits beside the checkpoints
    text = (runs["straight"] / "config.yaml").read_text()
    assert "samples_per_epoch: 4" in text
    assert "pose_negatives: per_sample" in text


@pytest.mark.slow
def test_resume_never_refuses_a_used_folder(runs) -> None:
    with pytest.raises(ValueError, match="resume=never"):
        main(["smoke", f"data.root={runs['root']}", *TINY, f"output_dir={runs['straight']}",
              "checkpoint.resume=never"])


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch) -> None:
    folder = CheckpointDir(tmp_path / "ck", keep_last=2)
    for step in (1, 2, 3):
        folder.save({"position": {"global_step": step}, "x": torch.ones(2) * step}, step)
    assert [p.name for p in folder.all()] == ["step-00000002.pt", "step-00000003.pt"]  # pruned
    assert load_checkpoint(folder.latest())["x"].tolist() == [3.0, 3.0]

    def broken_save(obj, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        folder.save({"x": torch.zeros(1)}, 4)
    assert not (tmp_path / "ck" / "step-00000004.pt").exists()
    assert [p.name for p in (tmp_path / "ck").iterdir() if p.name.startswith(".")] == []  # no temp files left
    assert folder.latest().name == "step-00000003.pt"


def test_bad_checkpoints_are_clear_errors(tmp_path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"epoch": 801, "state_dict": {}}, tmp_path / "official.pth")
    with pytest.raises(CheckpointError, match="facepcl convert"):
        load_checkpoint(tmp_path / "official.pth")
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.slow
def test_model_init_continues_from_an_export(runs, tmp_path) -> None:
    """``model.init`` starts a run from an exported model (continued pretraining / fine-tuning)."""
    start = runs["straight"] / "model"
    assert main(["smoke", f"data.root={runs['root']}", *TINY, "data.samples_per_epoch=4", "train.max_steps=1",
                 f"model.init={start}", f"output_dir={tmp_path / 'ft'}"]) == 0
    first = load_checkpoint(CheckpointDir(tmp_path / "ft" / "checkpoints").latest())
    init = facepcl.load(start, components="all").state_dict()
    changed = [k for k, v in first["model"].items() if k.endswith("weight") and not torch.equal(v, init[k])]
    assert changed  # trained one iteration from the export's weights ...
    for k in ("encoder.trunk.stem.0.weight", "decoder.fc.weight"):
        assert (first["model"][k] - init[k]).abs().max() < 0.05  # ... not from a fresh random init
    exported = facepcl.load(tmp_path / "ft" / "model")
    assert exported.config.preprocess == facepcl.load(start).config.preprocess
    with pytest.raises(ValueError, match=r"model\.init"):
        main(["smoke", f"data.root={runs['root']}", *TINY, "model.decoder_dim=64", f"model.init={start}",
              f"output_dir={tmp_path / 'bad'}"])


def test_checkpoints_are_recorded_and_a_damaged_one_falls_back_to_the_one_before(tmp_path, caplog) -> None:
    folder = CheckpointDir(tmp_path / "ck", keep_last=2)
    for step in (1, 2, 3):
        folder.save({"position": {"global_step": step}, "x": torch.ones(2) * step}, step)
    index = json.loads((tmp_path / "ck" / "index.json").read_text())
    assert index["latest"] == "step-00000003.pt"
    assert sorted(index["files"]) == ["step-00000002.pt", "step-00000003.pt"]
    assert index["files"]["step-00000003.pt"]["size"] == (tmp_path / "ck" / "step-00000003.pt").stat().st_size
    path, state = folder.load_latest()
    assert path.name == "step-00000003.pt"
    assert state["x"].tolist() == [3.0, 3.0]
    newest = tmp_path / "ck" / "step-00000003.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit: same size, and torch.load may well still read it
    newest.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="facepcl.train"):
        path, state = folder.load_latest()
    assert path.name == "step-00000002.pt"
    assert state["x"].tolist() == [2.0, 2.0]
    assert "step-00000003.pt is damaged" in caplog.text
    assert "SHA-256" in caplog.text
    (tmp_path / "ck" / "step-00000002.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no intact checkpoint .*step-00000003.pt .*step-00000002.pt"):
        folder.load_latest()


def test_two_trainings_into_one_output_dir_are_refused(tmp_path) -> None:
    from facepcl._utils.folders import FolderLockedError
    from facepcl.train.checkpoint import lock_output

    root = make_video_tree(tmp_path / "data", identities=3, videos=2, frames=3)
    out = tmp_path / "run"
    held = lock_output(out)  # another training holds the folder
    try:
        with pytest.raises(FolderLockedError, match=r"another process is writing this training run \(pid"):
            main(["smoke", f"data.root={root}", *TINY, "train.max_steps=1", "data.samples_per_epoch=4",
                  f"output_dir={out}", "export.enabled=false"])
    finally:
        held.release()
    assert not (out / "checkpoints").exists()
    assert main(["smoke", f"data.root={root}", *TINY, "train.max_steps=1", "data.samples_per_epoch=4",
                 f"output_dir={out}", "export.enabled=false"]) == 0
