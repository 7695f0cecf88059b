"""Models that would give meaningless embeddings are refused at load, naming the tensor or config field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import facepcl
from facepcl.cli import main
from facepcl.errors import ModelLoadError

ENCODER_WEIGHT = "encoder.trunk.stem.0.weight"


@pytest.fixture()
def folder(random_model_dir, tmp_path) -> Path:
    """A writable copy of the random test model."""
    out = tmp_path / "model"
    shutil.copytree(random_model_dir, out)
    return out


def _edit_weights(folder: Path, edit) -> None:
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors")


def _edit_config(folder: Path, **preprocess) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    for key, value in preprocess.items():
        if key in cfg:
            cfg[key] = value
        else:
            cfg["preprocess"][key] = value
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("value, match", [(float("nan"), "NaN or infinite"), (float("inf"), "NaN or infinite")])
def test_non_finite_weights_are_refused(folder, value, match) -> None:
    def poison(state):
        state[ENCODER_WEIGHT].view(-1)[3] = value

    _edit_weights(folder, poison)
    with pytest.raises(ModelLoadError, match=match) as info:
        facepcl.load(folder, device="cpu")
    assert ENCODER_WEIGHT in str(info.value)
    assert "model.safetensors" in str(info.value)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.int8])
def test_integer_and_bool_weights_are_refused(folder, dtype) -> None:
    def cast(state):
        state[ENCODER_WEIGHT] = state[ENCODER_WEIGHT].to(dtype)

    _edit_weights(folder, cast)
    with pytest.raises(ModelLoadError, match=f"{ENCODER_WEIGHT}.*{str(dtype).removeprefix('torch.')}"):
        facepcl.load(folder, device="cpu")


@pytest.mark.parametrize("field, value, match", [
    ("std", [0, 0, 0], "preprocess.std must be positive"),
    ("std", [0.5, -1, 0.5], "preprocess.std must be positive"),
    ("mean", [0.5], r"preprocess.mean must be a list of 3 numbers"),
    ("color_order", "XYZ", "preprocess.color_order 'XYZ'"),
    ("crop_size", "64", "preprocess.crop_size must be a positive integer, got '64'"),
    ("crop_size", 64.0, "preprocess.crop_size must be a positive integer"),
    ("value_range", [1, 1], "preprocess.value_range"),
    ("template", [[1, 2]] * 4, "preprocess.template"),
    ("input_size", "64", "input_size must be a positive integer"),
    ("input_size", True, "input_size must be a positive integer"),
])
def test_degenerate_configs_are_refused_naming_the_field(folder, field, value, match) -> None:
    _edit_config(folder, **{field: value})
    with pytest.raises(ModelLoadError, match=match) as info:
        facepcl.load(folder, device="cpu")
    assert "config.json" in str(info.value)


def test_cli_refuses_a_nan_model_without_writing_an_export(folder, tmp_path, capsys) -> None:
    _edit_weights(folder, lambda s: s[ENCODER_WEIGHT].view(-1).__setitem__(0, float("nan")))
    crop = tmp_path / "crop.png"
    from PIL import Image

    Image.new("RGB", (64, 64), "gray").save(crop)
    rc = main(["embed", str(crop), "-o", str(tmp_path / "out"), "--model", str(folder), "--no-detect",
               "--device", "cpu", "--no-progress"])
    assert rc == 1
    assert "NaN" in capsys.readouterr().err
    assert not list(tmp_path.glob("out/part-*"))  # refused before any shard was written


@pytest.mark.parametrize("name", ["./missing-folder", "../etc"])
def test_missing_local_folder_says_so(name, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        facepcl.load(name)


def test_invalid_hub_id_is_a_model_load_error() -> None:
    with pytest.raises(ModelLoadError, match="nor a valid Hub id"):
        facepcl.load("org/name..bad")
