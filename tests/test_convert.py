"""Conversion of official PCL checkpoints: every tensor lands in the right place, bad files are refused."""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import facepcl
from facepcl.cli import main
from facepcl.convert import convert_checkpoint, official_layout, read_official_checkpoint
from facepcl.errors import CheckpointError, OutputError
from facepcl.model._keymap import PREFIXES, ours_to_official
from tests._official import (
    official_state_dict,
    reference_decoder,
    reference_encoder,
    reference_projection,
)


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> tuple[Path, dict]:
    sd = official_state_dict(seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "best.pth"
    torch.save({"epoch": 801, "state_dict": OrderedDict(sd)}, path)
    return path, sd


@pytest.fixture(scope="module")
def converted(official, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("converted") / "pcl"
    facepcl.convert_checkpoint(official[0], out)
    return out


def test_layout_matches_reference_document(official) -> None:
    _, sd = official
    layout = official_layout()
    assert {f"module.{k}" for k in layout} == set(sd)
    for k, shape in layout.items():
        assert tuple(sd[f"module.{k}"].shape) == shape, k
    assert layout["encoder.conv1.0.weight"] == (64, 3, 7, 7)
    assert layout["encoder.layer3_1.0.weight"] == (256, 128, 3, 3)
    assert layout["encoder.layer3_1.2.weight"] == (128, 256, 3, 3)


def test_every_tensor_lands_in_the_right_parameter(official, converted) -> None:
    _, sd = official
    model = facepcl.load(converted, components="all", device="cpu")
    ours = model.state_dict()
    assert len(ours) == len(sd)
    for key, value in ours.items():
        torch.testing.assert_close(value, sd[f"module.{ours_to_official(key)}"], rtol=0, atol=0, msg=key)
    # spot checks written out by hand, independent of the key map
    assert torch.equal(model.encoder.trunk.stem[0].weight, sd["module.encoder.conv1.0.weight"])
    assert torch.equal(model.encoder.trunk.stage2[2].theta.weight, sd["module.encoder.layer2_1.2.theta.weight"])
    assert torch.equal(model.encoder.face_branch[2].bias, sd["module.encoder.layer3_2_exp.2.bias"])
    assert torch.equal(model.face_head[3].running_var, sd["module.exp_fc.3.running_var"])
    assert torch.equal(model.decoder.layers[22].weight, sd["module.decoder.model.22.weight"])


def test_outputs_equal_a_direct_forward_over_the_official_tensors(official, converted) -> None:
    _, sd = official
    model = facepcl.load(converted, components="all", device="cpu")
    torch.manual_seed(0)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        feats = model(x)
        ref_trunk, ref_exp, ref_pose = reference_encoder(sd, x)
        assert (feats.trunk - ref_trunk).abs().max() <= 1e-5
        assert (feats.face - ref_exp).abs().max() <= 1e-5
        assert (feats.pose - ref_pose).abs().max() <= 1e-5
        torch.testing.assert_close(model.project_face(feats.face), reference_projection(sd, "exp_fc", ref_exp),
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model.project_pose(feats.pose), reference_projection(sd, "pose_fc", ref_pose),
                                   atol=1e-4, rtol=1e-4)
        code = F.normalize(ref_exp.flip(0) + ref_pose, dim=1)
        assert (model.reconstruct(feats.face.flip(0), feats.pose) - reference_decoder(sd, code)).abs().max() <= 1e-5


def test_converted_folder_format(converted) -> None:
    assert sorted(p.name for p in converted.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = facepcl.PCLConfig.from_json_file(converted / "config.json")
    assert cfg.components == ["encoder", "face_head", "pose_head", "decoder"]
    assert "epoch 801" in cfg.source
    assert "DreamMr/PCL" in cfg.source
    assert cfg.license.startswith("unknown")
    card = (converted / "README.md").read_text()
    assert "license: other" in card
    assert "DreamMr/PCL" in card


@pytest.mark.parametrize("form", ["bare", "unprefixed", "wrapped_unprefixed"])
def test_accepts_bare_and_unprefixed_forms(official, tmp_path, form) -> None:
    _, sd = official
    unprefixed = OrderedDict((k[len("module."):], v) for k, v in sd.items())
    obj = {"bare": OrderedDict(sd), "unprefixed": unprefixed,
           "wrapped_unprefixed": {"epoch": 5, "state_dict": unprefixed}}[form]
    torch.save(obj, tmp_path / "ckpt.pth")
    state, info = read_official_checkpoint(tmp_path / "ckpt.pth")
    assert info["components"] == ["encoder", "face_head", "pose_head", "decoder"]
    assert torch.equal(state["encoder.trunk.stem.0.weight"], sd["module.encoder.conv1.0.weight"])


def test_encoder_only_checkpoint_converts(official, tmp_path) -> None:
    _, sd = official
    enc = {k: v for k, v in sd.items() if k.startswith("module.encoder.")}
    torch.save({"epoch": 1, "state_dict": enc}, tmp_path / "enc.pth")
    out = facepcl.convert_checkpoint(tmp_path / "enc.pth", tmp_path / "out")
    model = facepcl.load(out, device="cpu")
    assert model.config.components == ["encoder"]
    with pytest.raises(facepcl.ModelLoadError, match="holds only"):
        facepcl.load(out, components=["decoder"], device="cpu")


def _expect(path: Path, *patterns: str) -> str:
    with pytest.raises(CheckpointError) as info:
        read_official_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    for p in patterns:
        assert p in msg, msg
    return msg


def test_truncated_file(official, tmp_path) -> None:
    data = official[0].read_bytes()
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(data[: len(data) // 3])
    _expect(bad, "truncated")


def test_empty_and_missing_files(tmp_path) -> None:
    (tmp_path / "empty.pth").write_bytes(b"")
    _expect(tmp_path / "empty.pth", "empty")
    _expect(tmp_path / "nope.pth", "no such file")


def test_pickled_code_is_never_executed(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    marker = tmp_path / "marker"
    # A checkpoint whose unpickling would create a file if code were executed.
    payload = {"state_dict": {}, "evil": _Touch(str(marker))}
    torch.save(payload, path, pickle_module=pickle)
    _expect(path, "pickled Python objects")
    assert not marker.exists()


class _Touch:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_linear_probe_checkpoint_is_refused(official, tmp_path) -> None:
    _, sd = official
    probe = OrderedDict((k[len("module.encoder."):], v) for k, v in sd.items() if k.startswith("module.encoder."))
    probe["linear_classifier.weight"] = torch.zeros(7, 6272)
    probe["linear_classifier.bias"] = torch.zeros(7)
    torch.save({"epoch": 300, "state_dict": probe}, tmp_path / "probe.pth")
    _expect(tmp_path / "probe.pth", "linear-probe", "(7, 6272)", "module.encoder.")


def test_unrelated_model_is_refused(tmp_path) -> None:
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "linear.pth")
    _expect(tmp_path / "linear.pth", "not part of the PCL layout", "module.encoder.conv1.0.weight")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    _expect(tmp_path / "list.pth", "found list")


def test_wrong_shapes_and_incomplete_parts_are_refused(official, tmp_path) -> None:
    _, sd = official
    bad = dict(sd)
    bad["module.encoder.layer3_1.0.weight"] = torch.zeros(128, 128, 3, 3)
    torch.save({"state_dict": bad}, tmp_path / "shape.pth")
    _expect(tmp_path / "shape.pth", "encoder.layer3_1.0.weight", "(256, 128, 3, 3)")
    partial = {k: v for k, v in sd.items() if k != "module.decoder.model.22.bias"}
    torch.save({"state_dict": partial}, tmp_path / "partial.pth")
    _expect(tmp_path / "partial.pth", "decoder is incomplete", "decoder.model.22.bias")


def test_key_map_is_one_to_one() -> None:
    layout = official_layout()
    ours = [facepcl.PCLModel(facepcl.PCLConfig(components=["encoder", "face_head", "pose_head", "decoder"]))
            .state_dict().keys()]
    assert len(set(layout)) == len(list(ours[0]))
    assert len({p[0] for p in PREFIXES}) == len(PREFIXES) == len({p[1] for p in PREFIXES})


def test_cli_convert(official, tmp_path, capsys) -> None:
    out = tmp_path / "cli_out"
    proc = subprocess.run([sys.executable, "-m", "facepcl", "convert", str(official[0]), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (out / "model.safetensors").is_file()
    # the error path in this process (the command's entry point is proven above): one start-up less
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert main(["convert", str(bad), str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "bad.pth" in err
    assert "truncated, corrupt or not a PyTorch checkpoint" in err
    assert not (tmp_path / "x").exists()


def test_raw_pickle_exploit_is_named_as_such_and_never_run(tmp_path) -> None:
    path = tmp_path / "raw.pth"
    marker = tmp_path / "marker"
    path.write_bytes(pickle.dumps({"state_dict": _Touch(str(marker))}))  # a plain pickle, not torch.save's zip
    msg = _expect(path, "pickle", "never executes")
    assert "truncated" not in msg
    assert not marker.exists()


def test_convert_refuses_an_existing_model_folder_and_a_file(official, tmp_path) -> None:
    out = tmp_path / "model"
    convert_checkpoint(official[0], out)
    before = (out / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(OutputError, match=r"already holds a model.*--overwrite"):
        convert_checkpoint(official[0], out)
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    assert convert_checkpoint(official[0], out, overwrite=True) == out
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        convert_checkpoint(official[0], blocker)
    rc = main(["convert", str(official[0]), str(out)])
    assert rc == 1
    assert main(["convert", str(official[0]), str(out), "--overwrite"]) == 0


# -- bounded reading: time, memory, Ctrl-C; values; a full disk ------------------------------------------------

def _hash_bomb(levels: int = 60) -> bytes:
    """A ~400-byte pickle that torch's safe loader accepts op by op: a tuple nested ``levels`` deep, each level
    holding the previous one twice (shared through the memo), used as a dict key. Hashing it takes 2**levels
    steps in C, where Ctrl-C is not seen."""
    level = b"h\x00h\x00\x86q\x00"  # BINGET 0, BINGET 0, TUPLE2, BINPUT 0
    return b"\x80\x02)q\x00" + level * levels + b"}h\x00K\x01s."


def test_a_pickle_hash_bomb_is_stopped_by_the_time_limit(tmp_path) -> None:
    bomb = tmp_path / "bomb.pth"
    bomb.write_bytes(_hash_bomb())
    with pytest.raises(CheckpointError, match=r"did not finish within 1 s.*hash bomb.*--load-timeout") as info:
        convert_checkpoint(bomb, tmp_path / "out", load_timeout=1.0)
    assert "\n" not in str(info.value)
    assert str(bomb) in str(info.value)
    assert not (tmp_path / "out").exists()


def test_ctrl_c_kills_the_reader_and_exits_130(tmp_path, capsys) -> None:
    import _thread
    import multiprocessing
    import threading

    bomb = tmp_path / "bomb.pth"
    bomb.write_bytes(_hash_bomb())
    timer = threading.Timer(1.0, _thread.interrupt_main)  # Ctrl-C while the child hashes
    timer.start()
    try:
        rc = main(["convert", str(bomb), str(tmp_path / "out"), "--load-timeout", "600"])
    finally:
        timer.cancel()
    assert rc == 130
    assert "facepcl convert: interrupted" in capsys.readouterr().err
    assert not multiprocessing.active_children()  # the reader was killed and reaped, not left hashing
    assert not (tmp_path / "out").exists()


def test_memory_limit_stops_the_reader(official, tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"needed more than the 1 MiB it may use.*--load-memory"):
        read_official_checkpoint(official[0], load_memory=1 << 20)


def test_a_protocol_0_pickle_is_named_a_pickle_not_truncated(tmp_path) -> None:
    path = tmp_path / "p0.pth"
    path.write_bytes(pickle.dumps({"state_dict": {"a": 1}}, protocol=0))
    msg = _expect(path, "pickled data", "never executes")
    assert "truncated" not in msg


def test_advice_keeps_the_trust_caveat_whole(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "evil": _Touch(str(tmp_path / "marker"))}, path, pickle_module=pickle)
    msg = _expect(path, "pickled Python objects")
    assert "Only if you trust the file's source" in msg
    assert "can run arbitrary code" in msg
    assert "will likely succeed" not in msg
    assert "\n" not in msg  # torch's own advice is replaced, not cut


@pytest.mark.parametrize("value, match", [(float("nan"), "NaN or infinite"), (float("inf"), "NaN or infinite"),
                                          (None, "expected floating point")])
def test_weights_that_load_would_refuse_are_refused_by_convert(official, tmp_path, value, match) -> None:
    _, sd = official
    bad = dict(sd)
    key = "module.encoder.conv1.0.weight"
    if value is None:
        bad[key] = bad[key].to(torch.int64)
    else:
        bad[key] = bad[key].clone()
        bad[key].view(-1)[5] = value
    torch.save({"state_dict": bad}, tmp_path / "bad.pth")
    msg = _expect(tmp_path / "bad.pth", key, match)
    with pytest.raises(CheckpointError):
        convert_checkpoint(tmp_path / "bad.pth", tmp_path / "out")
    assert not (tmp_path / "out").exists(), msg


def test_a_full_disk_leaves_no_partial_model_folder(official, tmp_path, monkeypatch) -> None:
    import errno

    from facepcl.model import _save

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_save, "save_file", full)
    out = tmp_path / "models" / "pcl"
    with pytest.raises(OutputError, match=r"pcl: cannot write the converted model \(No space left on device\)"):
        convert_checkpoint(official[0], out)
    assert not out.exists()
    assert list((tmp_path / "models").iterdir()) == []
    rc = main(["convert", str(official[0]), str(out)])
    assert rc == 1
    assert not out.exists()
