"""Renamed options (docs/names.md): the old names still work, with a DeprecationWarning, and old files still load."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import facepcl
from facepcl import PCLConfig, PCLModel
from facepcl.cli import build_parser
from facepcl.cli._finetune import run_options
from facepcl.config import DetectorConfig
from facepcl.detection import FaceDetector
from facepcl.eval._protocol import RunOptions
from facepcl.eval.datasets._base import ArrayImages
from facepcl.eval.features import extract_features
from facepcl.heads._spec import HeadSpec
from facepcl.viz import swap_faces


@pytest.fixture(autouse=True)
def _no_stray_warnings():
    # Every warning a test expects is caught with pytest.warns; anything else fails the test.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        yield


def test_face_detector_conf_threshold_is_det_threshold_with_a_warning():
    new = FaceDetector(device="cpu", det_threshold=0.6)
    with pytest.warns(DeprecationWarning, match="'conf_threshold' is deprecated, use 'det_threshold'") as caught:
        old = FaceDetector(device="cpu", conf_threshold=0.6)
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert old.det_threshold == new.det_threshold == 0.6
    assert repr(old) == repr(new)
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    a, b = old.detect(image), new.detect(image)
    assert np.array_equal(a.boxes, b.boxes)
    assert np.array_equal(a.scores, b.scores)
    with pytest.warns(DeprecationWarning, match="det_threshold"):
        assert old.conf_threshold == 0.6
    with pytest.raises(TypeError, match="give only 'det_threshold'"):
        FaceDetector(device="cpu", det_threshold=0.5, conf_threshold=0.6)
    with pytest.raises(ValueError, match=r"det_threshold must be in \[0, 1\]"):
        FaceDetector(device="cpu", det_threshold=1.5)


def test_old_config_files_load_silently_and_keep_their_hash(tmp_path):
    new = PCLConfig(detector=DetectorConfig(det_threshold=0.7))
    data = json.loads(new.to_json())
    assert data["detector"]["det_threshold"] == 0.7
    assert "conf_threshold" not in data["detector"]
    data["detector"]["conf_threshold"] = data["detector"].pop("det_threshold")  # as older versions wrote it
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    old = PCLConfig.from_json_file(path)  # no warning: published files cannot be edited by their users
    assert old.detector == new.detector
    assert old.detector.det_threshold == 0.7
    # The hash is computed under the key's first name: renaming it changed no model's hash.
    assert old.hash() == new.hash()
    assert new.hash() != PCLConfig(detector=DetectorConfig(det_threshold=0.75)).hash()
    data["detector"]["det_threshold"] = 0.7
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="give only 'det_threshold'"):
        PCLConfig.from_json_file(path)


def test_bundled_demo_config_uses_the_new_key_and_keeps_its_hash():
    path = Path(facepcl.__file__).parent / "weights" / "pcl-demo" / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["detector"]["det_threshold"] == 0.8
    assert "conf_threshold" not in data["detector"]
    cfg = PCLConfig.from_json_file(path)
    assert cfg.hash() == "e0ce0a42b0e2c023"  # as before the rename (published heads and exports record it)


def _spec(**kw) -> HeadSpec:
    return HeadSpec(name="fer", task="classification", features=["trunk"], input_size=32, in_dim=2048, out_dim=2,
                    label_names=["a", "b"], **kw)


def test_head_spec_align_becomes_detect():
    assert _spec().detect is False
    assert _spec(detect=True).detect is True
    with pytest.warns(DeprecationWarning, match="detect=True"):
        assert _spec(align="detect").detect is True
    with pytest.warns(DeprecationWarning, match="detect=False"):
        assert _spec(align="none").detect is False
    with pytest.raises(TypeError, match="give only detect="):
        _spec(detect=True, align="detect")
    written = _spec(detect=True).to_dict()
    assert written["detect"] is True
    assert "align" not in written
    for value, want in (("detect", True), ("none", False)):  # head.json files of earlier versions: no warning
        old = {**written, "align": value}
        del old["detect"]
        assert HeadSpec.from_dict(old).detect is want
    with pytest.raises(ValueError, match=r"head\.json.*align must be 'none' or 'detect'"):
        HeadSpec.from_dict({**{k: v for k, v in written.items() if k != "detect"}, "align": "sideways"})


def test_run_options_align_becomes_detect():
    with pytest.warns(DeprecationWarning, match="RunOptions: align='detect' is deprecated") as caught:
        assert RunOptions(align="detect") == RunOptions(detect=True)
    assert caught[0].filename == __file__
    with pytest.warns(DeprecationWarning):
        assert RunOptions(align="none") == RunOptions()
    with pytest.raises(ValueError, match="align must be 'none' or 'detect'"):
        RunOptions(align="sideways")
    with pytest.raises(TypeError, match="give only detect="):
        RunOptions(detect=True, align="detect")


def test_extract_features_align_none_is_detect_false():
    torch.manual_seed(0)
    model = PCLModel(PCLConfig())
    images = ArrayImages(np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8), "RGB", "x.npz")
    new = extract_features(model, images, input_size=32, detect=False, cache=False, device="cpu")
    with pytest.warns(DeprecationWarning, match="use detect=False"):
        old = extract_features(model, images, input_size=32, align="none", cache=False, device="cpu")
    assert old.key == new.key
    np.testing.assert_array_equal(old.arrays["trunk"], new.arrays["trunk"])


def test_cli_finetune_detect_and_its_old_spelling(capsys):
    parser = build_parser()
    base = ["finetune", "--task", "fer", "--dataset", "rafdb", "--data", "x"]
    assert run_options(parser.parse_args(base), "fer").detect is False
    assert run_options(parser.parse_args([*base, "--detect"]), "fer").detect is True
    capsys.readouterr()
    assert run_options(parser.parse_args([*base, "--align", "detect"]), "fer").detect is True
    assert "--align detect is deprecated; use --detect" in capsys.readouterr().err
    assert run_options(parser.parse_args([*base, "--align", "none"]), "fer").detect is False
    assert "--align none is deprecated" in capsys.readouterr().err


def test_swap_faces_old_names():
    torch.manual_seed(0)
    model = PCLModel(PCLConfig(components=["encoder", "decoder"])).eval()
    rng = np.random.default_rng(2)
    a, b = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    new = swap_faces(a, b, model, device="cpu", detect=False)
    with pytest.warns(DeprecationWarning, match="'align' is deprecated, use 'detect'"):
        old = swap_faces(a, b, model, device="cpu", align=False)
    np.testing.assert_array_equal(old.reconstructions, new.reconstructions)
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        swap_faces(a, b, model, device="cpu", aligned=False)


def test_embed_options_conf_threshold_is_det_threshold():
    from facepcl.export import EmbedOptions

    with pytest.warns(DeprecationWarning, match="'conf_threshold' is deprecated") as caught:
        old = EmbedOptions(inputs=["x.jpg"], out="out", conf_threshold=0.6)
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert old == EmbedOptions(inputs=["x.jpg"], out="out", det_threshold=0.6)
    with pytest.raises(TypeError, match="give only 'det_threshold'"):
        EmbedOptions(inputs=["x.jpg"], out="out", det_threshold=0.5, conf_threshold=0.6)
