"""Every input bounded, every unclear error one clear line: URLs, config sizes, config files, templates, huge images."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import facepcl
from facepcl.cli import main
from facepcl.config import PCLConfig, check_crop_size
from facepcl.errors import ModelLoadError

URL_CASES = [
    ["embed", "img.jpg", "-o", "s3://bucket/out"],
    ["embed", "s3://bucket/img.jpg", "-o", "out"],
    ["index", "export", "-o", "gs://bucket/index"],
    ["index", "gs://bucket/export", "-o", "index"],
    ["search", "gs://bucket/index", "q.jpg"],
    ["search", "index", "https://example.com/q.jpg"],
    ["prepare", "s3://bucket/videos", "-o", "frames"],
    ["prepare", "videos", "-o", "s3://bucket/frames"],
    ["convert", "s3://bucket/best.pth", "out"],
    ["convert", "best.pth", "gs://bucket/model"],
    ["plot", "export", "-o", "s3://bucket/map.png"],
    ["plot", "s3://bucket/export", "-o", "map.png"],
    ["swap", "a.jpg", "https://example.com/b.jpg", "-o", "grid.png"],
    ["swap", "a.jpg", "b.jpg", "-o", "s3://bucket/grid.png"],
]


@pytest.mark.parametrize("argv", URL_CASES, ids=[" ".join(a) for a in URL_CASES])
def test_cli_refuses_urls_before_touching_anything(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"facepcl {argv[0]}: error: ")
    assert "not supported yet" in err and "copy the data to a local folder" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert os.listdir(tmp_path) == []  # no local folder named "s3:" or "gs:"


def test_refuse_url_accepts_local_paths():
    from facepcl._utils.paths import refuse_url

    refuse_url(["a/b.jpg", "./s3/x", "C:\\data\\x.jpg", "/abs/path", "weird:name"], "INPUT")
    refuse_url(None, "-o")
    with pytest.raises(ValueError, match=r"-o 's3://b/x'.*s3://"):
        refuse_url("s3://b/x", "-o")


# -- config sizes, config files and templates --------------------------------------------------------------------

@pytest.fixture()
def folder(random_model_dir, tmp_path):
    """A writable copy of the random test model."""
    out = tmp_path / "model"
    shutil.copytree(random_model_dir, out)
    return out


def _edit_config(folder, **fields) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    for key, value in fields.items():
        (cfg if key in cfg else cfg["preprocess"])[key] = value
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.fixture()
def no_network(monkeypatch):
    """Building a network (on a real device) fails the test: the checks must come first."""
    from facepcl.model import PCLModel

    def boom(self, *a, **k):
        raise AssertionError("the network was built before the config was checked")

    monkeypatch.setattr(PCLModel, "__init__", boom)


@pytest.mark.parametrize("field, value, match", [
    ("crop_size", 20000, r"preprocess.crop_size must be at most 1,024 pixels, got 20,000"),
    ("decoder_dim", 1_000_000, r"decoder_dim must be at most 65,536, got 1,000,000"),
    ("projection_dim", 10**9, r"projection_dim must be at most 65,536"),
    ("input_size", 4096, r"input_size must be at most 1,024 pixels"),
    ("max_size", 10**6, None),
])
def test_config_sizes_are_bounded_before_anything_is_built(folder, no_network, field, value, match) -> None:
    if field == "max_size":
        cfg = json.loads((folder / "config.json").read_text())
        cfg["detector"]["max_size"] = value
        (folder / "config.json").write_text(json.dumps(cfg))
        match = r"detector.max_size must be at most 8,192 pixels"
    else:
        _edit_config(folder, **{field: value})
    with pytest.raises(ModelLoadError, match=match) as info:
        facepcl.load(folder, device="cpu")
    assert "config.json" in str(info.value) and "\n" not in str(info.value)


def test_a_network_too_large_for_its_config_is_refused_by_its_parameter_count() -> None:
    with pytest.raises(ValueError, match=r"the decoder .* would have [\d,]+ parameters .* over the limit"):
        PCLConfig(components=["encoder", "decoder"], decoder_dim=60000)
    with pytest.raises(ValueError, match=r"the face_head .* parameters"):
        PCLConfig(components=["encoder", "face_head", "pose_head"], input_size=1024, projection_hidden_dim=4096)
    PCLConfig(components=["encoder"], input_size=1024, projection_hidden_dim=4096)  # no heads: nothing to build


def test_crop_size_option_is_bounded() -> None:
    assert check_crop_size(1024) == 1024
    with pytest.raises(ValueError, match="crop_size must be at most 1,024 pixels, got 20,000"):
        check_crop_size(20000)


def test_weights_shaped_unlike_the_config_are_refused_before_they_are_read(folder, monkeypatch) -> None:
    state = load_file(folder / "model.safetensors")
    name = next(k for k in state if k.endswith("weight") and state[k].ndim == 4)
    state[name] = torch.zeros(3, *state[name].shape[1:])
    save_file(state, folder / "model.safetensors")
    read = []
    import facepcl.hub as hub

    monkeypatch.setattr(hub, "check_weights", lambda s, p: read.append(p))
    with pytest.raises(ModelLoadError, match=rf"mis-shaped keys: {name}: file \(3, "):
        facepcl.load(folder, device="cpu")
    assert read == []  # refused from the file's header, before its tensors were read and checked


def _head_folder(tmp_path, **edit):
    from facepcl.heads import HeadSpec, TaskHead, save_head

    spec = HeadSpec(name="fer", task="classification", features=["trunk"], input_size=32, in_dim=512, out_dim=3)
    folder = save_head(TaskHead(spec), tmp_path)
    path = folder / "head.json"
    data = json.loads(path.read_text())
    data.update(edit)
    path.write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize("edit, match", [
    ({"out_dim": 3_000_000}, r"head 'fer': out_dim must be at most 65,536, got 3,000,000"),
    ({"kind": "mlp", "hidden_dims": [65536, 65536, 65536]}, r"head 'fer': the mlp network .* parameters"),
    ({"in_dim": 10**9}, r"head 'fer': in_dim must be at most"),
    ({"input_size": 20000}, r"head 'fer': input_size must be at most 1,024 pixels"),
    ({"hidden_dims": ["wide"]}, r"hidden_dims\[0\] must be a positive integer"),
])
def test_head_sizes_are_bounded_before_the_head_is_built(tmp_path, monkeypatch, edit, match) -> None:
    from facepcl.heads import _modules, _spec, load_head

    folder = _head_folder(tmp_path, **edit)
    monkeypatch.setattr(_spec, "build_head", lambda *a, **k: pytest.fail("built before the check"))
    with pytest.raises(ModelLoadError, match=match) as info:
        load_head(folder)
    assert "head.json" in str(info.value)
    assert _modules.build_head is not None


@pytest.mark.parametrize("content, match", [
    (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
    (b'{"name": "caf\xe9"}', r"not UTF-8 text \(byte 0xe9 at offset 13\)"),
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "holds a JSON list, not an object"),
])
def test_unreadable_config_and_head_files_give_one_line_naming_the_file(folder, tmp_path, content, match) -> None:
    from facepcl.heads import load_head

    (folder / "config.json").write_bytes(content)
    with pytest.raises(ModelLoadError, match=match) as info:
        facepcl.load(folder, device="cpu")
    message = str(info.value)
    assert message.startswith(str(folder / "config.json")) and "\n" not in message
    head = _head_folder(tmp_path)
    (head / "head.json").write_bytes(content)
    with pytest.raises(ModelLoadError, match=match) as info:
        load_head(head)
    assert str(info.value).startswith(str(head / "head.json")) and "\n" not in str(info.value)


def test_oversized_config_file_is_refused_unread(folder, monkeypatch) -> None:
    from facepcl._utils import validate

    monkeypatch.setattr(validate, "MAX_JSON_BYTES", 100)
    with pytest.raises(ModelLoadError, match=r"config.json: cannot read the model config: the file has [\d,]+ bytes"):
        facepcl.load(folder, device="cpu")


@pytest.mark.parametrize("template, match", [
    ([[20.0, 20.0]] * 5, "all 5 points are the same point"),
    ([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0], [40.0, 40.0], [50.0, 50.0]], "lie on one line"),
    ([[10.0, 23.0], [20.0, 23.0], [30.0, 23.0], [40.0, 23.0], [50.0, 23.0]], "lie on one line"),
])
def test_degenerate_templates_are_refused_at_load(folder, template, match) -> None:
    _edit_config(folder, template=template)
    with pytest.raises(ModelLoadError, match=f"preprocess.template: .*{match}") as info:
        facepcl.load(folder, device="cpu")
    assert "config.json" in str(info.value)
