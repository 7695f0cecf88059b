"""The fast encoder's runtime: forced choices, the measured choice, the int8 gate and stale calibrations refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import facepcl
from facepcl import FaceEmbedder
from facepcl.runtime import _encoders
from facepcl.runtime._int8 import GATE, INT8_FILE, Int8Calibration, StaleCalibrationError
from tests import _samples

ort = pytest.importorskip("onnxruntime")
DEMO = Path(facepcl.__file__).parent / "weights" / "pcl-demo"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)


def test_forced_runtimes_run_and_say_so(random_pcl_model, crops):
    exact = FaceEmbedder(random_pcl_model, device="cpu", mode="exact", detect=False).encode(crops)
    on_ort = FaceEmbedder(random_pcl_model, device="cpu", detect=False, encoder_runtime="onnxruntime")
    got = on_ort.encode(crops)
    for k in ("face", "pose", "trunk"):  # float32 graph: the exact path's numbers up to rounding
        np.testing.assert_allclose(got[k], exact[k], atol=1e-4, rtol=0, err_msg=k)
    prov = on_ort.provenance()
    assert prov["accel"]["encoder"] == {"dtype": "float32", "channels_last": False, "compile": False,
                                        "runtime": "onnxruntime"}
    assert prov["encoder_runtime"]["runtime"] == "onnxruntime"
    assert prov["encoder_runtime"]["chosen_by"] == "forced"
    assert "onnxruntime, float32" in repr(on_ort)
    on_torch = FaceEmbedder(random_pcl_model, device="cpu", detect=False, encoder_runtime="torch")
    on_torch.encode(crops)
    assert on_torch.accel_info()["encoder"]["runtime"] == "torch"
    assert on_torch.provenance()["encoder_runtime"]["chosen_by"] == "forced"


def test_the_command_forces_a_runtime_and_the_export_records_it(random_model_dir, crops, tmp_path):
    from PIL import Image

    from facepcl.cli import main
    from facepcl.export import read_metadata

    folder = tmp_path / "crops"
    folder.mkdir()
    for i, crop in enumerate(crops[:2]):
        Image.fromarray(crop).save(folder / f"{i}.png")
    common = [str(folder), "--model", str(random_model_dir), "--device", "cpu", "--no-detect", "--no-progress", "-q"]
    assert main(["embed", *common, "-o", str(tmp_path / "out"), "--encoder-runtime", "onnxruntime"]) == 0
    meta = read_metadata(tmp_path / "out")
    assert meta["accel"]["encoder"]["runtime"] == "onnxruntime"
    assert meta["encoder_runtime"]["chosen_by"] == "forced"


def test_onnxruntime_follows_weight_changes(random_pcl_model, crops):
    emb = FaceEmbedder(random_pcl_model, device="cpu", detect=False, encoder_runtime="onnxruntime")
    before = emb.encode(crops)["trunk"]
    with torch.no_grad():
        for p in random_pcl_model.encoder.parameters():
            p.mul_(0.5)
    after = emb.encode(crops)["trunk"]
    want = FaceEmbedder(random_pcl_model, device="cpu", mode="exact", detect=False).encode(crops)["trunk"]
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, want, atol=1e-4, rtol=0)


def test_options_that_only_torch_runs_refuse_onnxruntime(random_pcl_model):
    for bad in ("onnx", "int8", None, "Auto"):
        with pytest.raises(ValueError, match=r"encoder_runtime must be one of \('auto', 'torch'"):
            FaceEmbedder(random_pcl_model, device="cpu", encoder_runtime=bad)
    for kwargs, why in (({"mode": "exact"}, "mode='exact'"), ({"dtype": "bf16"}, "dtype or compile")):
        for runtime in ("onnxruntime", "onnxruntime-int8"):
            with pytest.raises(ValueError, match=why):
                FaceEmbedder(random_pcl_model, device="cpu", encoder_runtime=runtime, **kwargs)
    # auto with a torch option is torch, by rule (nothing measured)
    emb = FaceEmbedder(random_pcl_model, device="cpu", dtype="float32")
    assert emb._encoder.choice == _encoders.RuntimeChoice("torch", "float32", "rule")


def test_auto_measures_once_and_runs_the_fastest(random_pcl_model, crops, monkeypatch):
    monkeypatch.setattr(_encoders, "_CHOICES", {})
    emb = FaceEmbedder(random_pcl_model, device="cpu", detect=False, batch_size=8)
    assert "chosen at first use" in repr(emb)  # a repr measures nothing
    emb.encode(crops)
    choice = emb._encoder.choice
    assert choice.chosen_by == "measurement"
    assert choice.batch == _encoders.MEASURE_BATCH  # one regime, whatever the batch size
    assert set(choice.seconds) == {"torch", "onnxruntime"}
    assert choice.runtime == min(choice.seconds, key=choice.seconds.get)
    # int8 is never a candidate for a model without a calibration (here: not even a folder)
    assert "onnxruntime-int8" in choice.excluded
    assert emb.provenance()["encoder_runtime"] == choice.describe()
    # the choice is kept: in this process, and on disk for the next one
    assert FaceEmbedder(random_pcl_model, device="cpu", detect=False, batch_size=1)._encoder.choice is choice
    monkeypatch.setattr(_encoders, "_CHOICES", {})
    again = FaceEmbedder(random_pcl_model, device="cpu", detect=False, batch_size=8)._encoder.choice
    assert again == choice
    assert any(r["runtime"] == choice.runtime for r in _encoders.recorded_choices())


@pytest.mark.parametrize("native", [True, False])
def test_int8_is_a_candidate_only_where_bf16_is_emulated(native, monkeypatch, crops):
    monkeypatch.setattr(_encoders, "_CHOICES", {})
    monkeypatch.setattr(_encoders, "native_bf16", lambda device: native)
    emb = FaceEmbedder("pcl-demo", device="cpu", detect=False, batch_size=4)
    choice = emb._encoder.choice
    if native:
        assert set(choice.seconds) == {"torch", "onnxruntime"}
        assert "natively" in choice.excluded["onnxruntime-int8"]
    else:
        assert set(choice.seconds) == {"torch", "onnxruntime", "onnxruntime-int8"}
        assert choice.excluded == {}
    assert choice.runtime == min(choice.seconds, key=choice.seconds.get)
    assert emb.info()["dtype"] == choice.dtype


@pytest.fixture
def demo_copy(tmp_path) -> Path:
    folder = tmp_path / "pcl-demo"
    shutil.copytree(DEMO, folder)
    return folder


def test_stale_or_failed_calibrations_are_refused(demo_copy, crops, monkeypatch):
    monkeypatch.setattr(_encoders, "_CHOICES", {})
    monkeypatch.setattr(_encoders, "native_bf16", lambda device: False)
    model = facepcl.load(str(demo_copy), device="cpu")
    with torch.no_grad():  # fine-tuned in place: another encoder_sha256 than the calibration's
        next(model.encoder.parameters()).mul_(1.01)
    with pytest.raises(StaleCalibrationError, match="encoder_sha256"):
        FaceEmbedder(model, device="cpu", detect=False, encoder_runtime="onnxruntime-int8").encode(crops)
    auto = FaceEmbedder(model, device="cpu", detect=False, batch_size=4)._encoder.choice
    assert "encoder_sha256" in auto.excluded["onnxruntime-int8"]  # never a stale int8 encoder by default
    assert "onnxruntime-int8" not in auto.seconds
    with pytest.raises(StaleCalibrationError, match="made at 64 px"):
        FaceEmbedder(str(demo_copy), device="cpu", detect=False, crop_size=96,
                     encoder_runtime="onnxruntime-int8").encode(crops)
    # a calibration whose held-out faces failed the gate is never used
    path = demo_copy / INT8_FILE
    raw = json.loads(path.read_text())
    raw["heldout"]["min_cosine"]["face"] = GATE - 0.001
    path.write_text(json.dumps(raw))
    assert not Int8Calibration.load(path).passed
    with pytest.raises(StaleCalibrationError, match="faithfulness gate"):
        FaceEmbedder(str(demo_copy), device="cpu", detect=False, encoder_runtime="onnxruntime-int8").encode(crops)
    path.write_text("{not json")
    with pytest.raises(StaleCalibrationError, match="not a readable int8 calibration"):
        FaceEmbedder(str(demo_copy), device="cpu", detect=False, encoder_runtime="onnxruntime-int8").encode(crops)


def test_exact_mode_stays_the_reference_network(random_pcl_model, crops):
    emb = FaceEmbedder(random_pcl_model, device="cpu", mode="exact", detect=False)
    got = emb.encode(crops)
    with torch.inference_mode():
        want = random_pcl_model.encoder(emb.transform.batch(crops, "cpu"))
    for k in ("face", "pose", "trunk"):
        np.testing.assert_array_equal(got[k], getattr(want, k).numpy())  # bit for bit
    assert emb.accel_info()["encoder"]["runtime"] == "torch"


@pytest.mark.slow
@pytest.mark.photos
def test_int8_encoder_of_pcl_demo_is_faithful_on_heldout_faces():
    calibration = Int8Calibration.load(DEMO / INT8_FILE)
    assert calibration.passed
    photos = {"scikit-image/astronaut.png": _samples.astronaut(),
              "matplotlib/grace_hopper.jpg": _samples.grace_hopper(),
              "insightface/t1.jpg": _samples.insightface("t1.jpg"),
              **{f"face_recognition/{n}": _samples.face_recognition(n) for n in ("obama.jpg", "obama2.jpg",
                                                                                  "obama3.jpg", "biden.jpg")},
              "examples/pair.jpg": EXAMPLES / "pair.jpg"}
    used = " ".join(calibration.sources["calibration"] + calibration.sources["validation"])
    assert not [name for name in photos if name in used]  # faces the calibration never saw
    exact = FaceEmbedder("pcl-demo", device="cpu", mode="exact", return_crops=True, num_workers=0)
    ref = exact.embed([str(p) for p in photos.values()])
    assert len(ref) >= 12
    int8 = FaceEmbedder("pcl-demo", device="cpu", detect=False, encoder_runtime="onnxruntime-int8")
    got = int8.encode(ref.crops)
    assert int8.accel_info()["encoder"] == {"dtype": "int8", "channels_last": False, "compile": False,
                                            "runtime": "onnxruntime-int8"}
    for k in ("face", "pose", "trunk"):
        cos = _cosine(getattr(ref, k), got[k])
        assert cos.min() >= GATE, (k, cos.min())

    def nearest(face: np.ndarray) -> np.ndarray:
        unit = face / np.linalg.norm(face, axis=1, keepdims=True)
        sim = unit @ unit.T
        np.fill_diagonal(sim, -np.inf)
        return sim.argmax(1)

    np.testing.assert_array_equal(nearest(got["face"]), nearest(ref.face))  # every face keeps its nearest neighbour
