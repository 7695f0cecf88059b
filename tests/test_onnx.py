"""``facepcl onnx``: the encoder and heads in ONNX Runtime give the exact path's codes, with only config.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import facepcl
from facepcl._utils.digest import encoder_digest
from facepcl.cli import main
from facepcl.deploy import export_onnx
from facepcl.errors import OutputError

ort = pytest.importorskip("onnxruntime")
EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples" / "images").glob("*.jpg"))


def _pixels(crops: np.ndarray, pre: dict) -> np.ndarray:
    """uint8 (N, S, S, 3) RGB crops -> the encoder's input, from config.json alone (numpy, no facepcl)."""
    x = crops.astype(np.float32) / 255.0
    if pre["color_order"] == "BGR":
        x = x[..., ::-1]
    lo, hi = pre["value_range"]
    x = x * (hi - lo) + lo
    if pre["mean"] is not None:
        x = (x - np.float32(pre["mean"])) / np.float32(pre["std"])
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "pcl-demo"
    assert main(["onnx", "pcl-demo", "-o", str(out)]) == 0
    return out


def test_onnx_encoder_matches_the_exact_path_on_real_faces(demo_onnx):
    result = facepcl.embed([str(p) for p in EXAMPLES], model="pcl-demo", device="cpu", mode="exact",
                           return_crops=True)
    assert len(result) >= 3  # real faces of the example photos
    cfg = json.loads((demo_onnx / "config.json").read_text())
    session = ort.InferenceSession(str(demo_onnx / cfg["onnx"]["encoder"]["file"]))
    assert [o.name for o in session.get_outputs()] == ["face", "pose", "trunk"]
    face, pose, trunk = session.run(None, {"pixels": _pixels(result.crops, cfg["preprocess"])})
    for name, got in (("face", face), ("pose", pose), ("trunk", trunk)):
        want = getattr(result, name)
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0, err_msg=name)
    # the batch is dynamic: one face alone gives its row of the batch
    one = session.run(None, {"pixels": _pixels(result.crops[:1], cfg["preprocess"])})[0]
    np.testing.assert_allclose(one, face[:1], atol=1e-5, rtol=0)


def test_card_and_config_say_how_to_use_it_without_facepcl(demo_onnx):
    cfg = json.loads((demo_onnx / "config.json").read_text())
    assert cfg["preprocess"]["crop_size"] == 64
    assert len(cfg["preprocess"]["template"]) == 5
    assert cfg["onnx"]["encoder"]["input_shape"] == ["batch", 3, 64, 64]
    assert cfg["onnx"]["encoder_sha256"] == encoder_digest(facepcl.load("pcl-demo"))
    card = (demo_onnx / "README.md").read_text()
    assert "onnxruntime" in card
    assert "library_name: onnx" in card
    assert str(cfg["preprocess"]["template"]) in card


def test_task_heads_are_exported_and_checked(random_model_dir, tmp_path):
    from facepcl.config import feature_dim
    from facepcl.heads import HeadSpec, TaskHead, attach_head

    model = facepcl.hub.load(random_model_dir, device="cpu")
    torch.manual_seed(0)
    head = TaskHead(HeadSpec(name="fer", task="classification", features=["face", "pose"], input_size=64,
                             in_dim=2 * feature_dim(64), out_dim=7)).eval()
    attach_head(model, head, check_encoder=False)
    out = export_onnx(model, tmp_path / "onnx")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["onnx"]["heads"]["fer"]["out_dim"] == 7
    x = torch.randn(5, 2 * feature_dim(64))
    session = ort.InferenceSession(str(out / "head-fer.onnx"))
    with torch.no_grad():
        want = head(x).numpy()
    np.testing.assert_allclose(session.run(None, {"features": x.numpy()})[0], want, atol=1e-5, rtol=0)


def test_a_folder_with_other_files_is_refused_unless_overwrite(random_model_dir, tmp_path):
    model = facepcl.hub.load(random_model_dir, device="cpu")
    out = tmp_path / "onnx"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"notes\.txt.*overwrite"):
        export_onnx(model, out)
    export_onnx(model, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"  # only the ONNX model's own files are replaced
    assert (out / "encoder.onnx").is_file()
