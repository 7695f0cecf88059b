"""The fast path (facepcl.runtime._accel): bf16, channels_last, compiled encoder, fast detector, decode threads.

Reduced precision and compilation must keep the embeddings of real faces
within cosine similarity 0.999 of the exact float32 path, find the same
faces with boxes within a pixel, and be switchable off: the default path
runs the model's own modules, unchanged.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

import facepcl
from facepcl import PCLConfig, PCLModel
from facepcl.detection import FaceDetector
from facepcl.io import load_image
from facepcl.io import prefetch as _parallel
from facepcl.pipeline import FaceEmbedder
from facepcl.registry import get_model_info
from facepcl.runtime import _accel
from tests import _samples

FACES = ["multi_face.jpg", "single_face.jpg", "BWPictureHuman.jpg", "Image_with_alpha.png", "0-f1-su-ph.jpg",
         "45-m7-di-ph.jpg"]
MIN_COSINE = 0.999


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def face_photos() -> list[np.ndarray]:
    """Real photos with 11 faces in all (5 in the group photo), decoded."""
    return [load_image(_samples.pyfeat(n)) for n in FACES] + [load_image(_samples.astronaut())]


def _models(random_pcl_model) -> list[tuple[str, PCLModel]]:
    models = [("random", random_pcl_model)]
    info = get_model_info("pcl-demo")
    if info is not None and info.available():  # the trained bundled model, once it ships
        models.append(("pcl-demo", facepcl.load("pcl-demo", device="cpu")))
    return models


# -- plans: the switches -------------------------------------------------------------------------------------


def test_default_plan_is_exact_and_fast_picks_native_bf16():
    cpu = torch.device("cpu")
    assert _accel.encoder_plan(cpu).exact
    assert _accel.detector_plan(cpu).exact
    fast = _accel.encoder_plan(cpu, mode="fast")
    assert fast.dtype == (torch.bfloat16 if _accel.native_bf16(cpu) else torch.float32)
    assert fast.channels_last
    assert not fast.compile
    assert not fast.exact
    # explicit options override the fast defaults
    assert _accel.encoder_plan(cpu, mode="fast", dtype="float32", compile=True) == _accel.Plan(
        torch.float32, channels_last=True, compile=True)
    assert _accel.encoder_plan(cpu, dtype="bf16") == _accel.Plan(torch.bfloat16, channels_last=True, compile=False)
    det = _accel.detector_plan(cpu, mode="fast")
    assert not det.compile
    assert det.channels_last
    assert det.dtype == torch.float32  # bf16 only when asked for
    assert _accel.detector_plan(cpu, dtype="bf16") == _accel.Plan(torch.bfloat16, channels_last=True)
    for plan in (_accel.encoder_plan, _accel.detector_plan):
        with pytest.raises(ValueError, match=r"mode must be one of \('fast', 'exact'\), got 'quick'"):
            plan(cpu, mode="quick")


def test_exact_path_runs_the_models_own_modules(random_pcl_model, face_photos):
    emb = FaceEmbedder(random_pcl_model, device="cpu", mode="exact")
    assert emb.plan.exact
    assert emb.detector.plan.exact
    assert emb.detector._run is emb.detector.net
    res = emb.embed(face_photos[1])
    with torch.inference_mode():
        from facepcl.preprocess import crops_to_input

        crops = emb.crop(face_photos[1], res.kps)
        direct = random_pcl_model.encoder(crops_to_input(crops, emb.preprocess, "cpu"))
    np.testing.assert_array_equal(res.face, direct.face.numpy())  # bit for bit
    assert emb._encoder._torch._module is None  # no copy was made
    assert emb._encoder.choice.chosen_by == "rule"  # the exact mode is the reference network, in torch
    assert res.info["accel"] == {"mode": "exact", "exact": True,
                                 "encoder": {"dtype": "float32", "channels_last": False, "compile": False,
                                             "runtime": "torch"},
                                 "detector": {"dtype": "float32", "channels_last": False, "compile": False,
                                              "runtime": "torch", "canvas_step": 32, "rescue_threshold": 0.2}}


def test_default_is_the_fast_path_and_says_so(random_pcl_model):
    emb = FaceEmbedder(random_pcl_model, device="cpu")
    accel = emb.accel_info()
    assert accel["mode"] == "fast"
    assert not accel["exact"]
    assert accel["encoder"]["channels_last"]
    # The detector stays float32 whatever the encoder's dtype (bf16 where native), so a CPU runs it on ONNX Runtime.
    assert emb.detector.plan.dtype == torch.float32
    assert accel["detector"]["runtime"] == "onnxruntime" == emb.detector.runtime
    for bad in ("Fast", "exact ", True, None):
        with pytest.raises(ValueError, match=r"FaceEmbedder: mode must be one of \('fast', 'exact'\)"):
            FaceEmbedder(random_pcl_model, device="cpu", mode=bad)
    with pytest.raises(ValueError, match="mode must be one of"):
        FaceEmbedder(random_pcl_model, device="cpu", detector={"mode": "quick"})


def test_reduced_precision_works_on_a_copy(random_pcl_model, face_photos):
    before = {k: v.clone() for k, v in random_pcl_model.state_dict().items()}
    emb = FaceEmbedder(random_pcl_model, device="cpu", dtype="bf16")
    res = emb.embed(face_photos[1])
    assert res.info["dtype"] == "bfloat16"
    assert res.face.dtype == np.float32
    assert emb._encoder.choice.runtime == "torch"  # a torch dtype: torch runs it
    copy = emb._encoder._torch._module
    assert next(copy.parameters()).dtype == torch.bfloat16
    assert copy.trunk.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    for k, v in random_pcl_model.state_dict().items():  # the user's model is untouched
        assert v.dtype == before[k].dtype
        assert torch.equal(v, before[k])


def test_runner_follows_weight_changes(random_pcl_model):
    model = PCLModel(PCLConfig(name="changing")).eval()
    model.load_state_dict(random_pcl_model.state_dict())
    runner = _accel.EncoderRunner(model.encoder, torch.device("cpu"), _accel.Plan(torch.bfloat16, True, False))
    x = torch.rand(3, 3, 64, 64)
    with torch.inference_mode():
        first = runner(x).trunk
        with torch.no_grad():
            for p in model.encoder.parameters():
                p.mul_(0.5)
        second = runner(x).trunk
        want = model.encoder(x).trunk
    assert not torch.allclose(first, second)
    assert _cosine(second.numpy(), want.numpy()).min() > MIN_COSINE


# -- accuracy on real faces ------------------------------------------------------------------------------


@pytest.mark.parametrize("plan", [_accel.Plan(torch.bfloat16, True, False), _accel.Plan(torch.float32, True, False)],
                         ids=["bf16-channels_last", "fp32-channels_last"])
def test_encoder_plans_keep_cosine_on_real_faces(random_pcl_model, face_photos, plan):
    for name, model in _models(random_pcl_model):
        exact = FaceEmbedder(model, device="cpu", num_workers=0, mode="exact")
        res = exact.embed(face_photos)
        assert len(res) == 11, name
        crops = np.concatenate([exact.crop(face_photos[i], res.kps[res.image_index == i])
                                for i in range(len(face_photos))])
        ref = exact.encode(crops)
        fast = FaceEmbedder(model, device="cpu", encoder_runtime="torch")
        fast._encoder._torch = _accel.EncoderRunner(model.encoder, torch.device("cpu"), plan)
        got = fast.encode(crops)
        for k in ("face", "pose", "trunk"):
            cos = _cosine(ref[k], got[k])
            assert cos.min() >= MIN_COSINE, (name, k, cos.min())
            if plan.dtype == torch.float32:
                assert cos.min() > 1 - 1e-6


@pytest.mark.parametrize("dtype", [None, "bf16"])
def test_fast_detector_finds_the_same_faces(face_photos, dtype):
    exact = FaceDetector(device="cpu", det_threshold=0.5)
    fast = FaceDetector(device="cpu", det_threshold=0.5, mode="fast", dtype=dtype)
    assert fast._run is not fast.net
    assert "mode='fast'" in repr(fast)
    for image, a, b in zip(face_photos, exact.detect_batch(face_photos), fast.detect_batch(face_photos),
                           strict=True):
        if dtype is None:  # folded float32: the same numbers up to rounding
            np.testing.assert_allclose(a.kps, b.kps, atol=1e-2)
        assert len(a) == len(b)
        # faces are sorted by score; match them by box centre in case two scores swap
        ca, cb = a.boxes.reshape(-1, 2, 2).mean(1), b.boxes.reshape(-1, 2, 2).mean(1)
        order = [int(np.argmin(((cb - c) ** 2).sum(1))) for c in ca]
        scale = min(1.0, exact.max_size / max(image.shape[:2]))  # detector pixels per image pixel
        assert np.abs(a.boxes - b.boxes[order]).max() * scale <= 1.0
        assert np.abs(a.kps - b.kps[order]).max() * scale <= 1.0
        assert np.abs(a.scores - b.scores[order]).max() < 0.01


def test_fast_pipeline_keeps_cosine_end_to_end(random_pcl_model, face_photos):
    for name, model in _models(random_pcl_model):
        ref = FaceEmbedder(model, device="cpu", mode="exact").embed(face_photos)
        fast = FaceEmbedder(model, device="cpu").embed(face_photos)  # the default
        assert fast.info["accel"]["mode"] == "fast"
        assert fast.info["accel"]["detector"]["channels_last"]
        np.testing.assert_array_equal(ref.image_index, fast.image_index)  # the same faces ...
        assert np.abs(ref.kps - fast.kps).max() <= 0.5  # ... at the same landmarks
        for k in ("face", "pose", "trunk"):
            cos = _cosine(getattr(ref, k), getattr(fast, k))
            assert cos.min() >= MIN_COSINE, (name, k, cos.min())


@pytest.mark.slow
def test_compiled_encoder_is_close_and_compiles_once_for_all_batch_sizes(random_pcl_model):
    runner = _accel.EncoderRunner(random_pcl_model.encoder, torch.device("cpu"),
                                  _accel.encoder_plan("cpu", mode="fast", compile=True))
    x = torch.rand(9, 3, 64, 64)
    with torch.inference_mode():
        want = random_pcl_model.encoder(x)
        outs = [runner(x[:n]) for n in (9, 1, 4, 2)]
    assert runner.compilations[0] == 1  # one graph with a dynamic batch serves every size
    for out, n in zip(outs, (9, 1, 4, 2), strict=True):
        assert out.trunk.shape == (n, 2048)
        assert out.trunk.dtype == torch.float32
        for k in ("face", "pose", "trunk"):
            assert _cosine(getattr(want, k)[:n].numpy(), getattr(out, k).numpy()).min() >= MIN_COSINE


# -- building blocks -------------------------------------------------------------------------------------


def test_fold_batchnorm_and_flip_input_channels():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    net[1].running_mean.normal_()
    net[1].running_var.uniform_(0.5, 2.0)
    net.eval()
    folded = _accel.fold_batchnorm(net)
    assert isinstance(folded[1], nn.Identity)
    assert isinstance(net[1], nn.BatchNorm2d)  # a copy
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
    _accel.flip_input_channels(folded)
    torch.testing.assert_close(folded(x.flip(1)), net(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="3 input channels"):
        _accel.flip_input_channels(nn.Sequential(nn.Conv2d(4, 4, 1)))


def test_prefetch_keeps_order_and_bounds_lookahead():
    started: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.002 * (i % 3))  # finish out of order
        return i * i

    gen = _parallel.prefetch(work, range(40), workers=3, lookahead=5)
    got = [next(gen) for _ in range(3)]
    time.sleep(0.05)
    with lock:
        assert len(started) <= 3 + 5 + 1  # consumed + in flight + the one being submitted
    got += list(gen)
    assert got == [i * i for i in range(40)]
    assert list(_parallel.prefetch(work, range(5), workers=0, lookahead=1)) == [0, 1, 4, 9, 16]


@pytest.mark.parametrize("workers", [0, 2])
def test_prefetch_inline_items_yield_several_results_in_place_and_start_late(workers):
    # Multiples of 3 stand for videos: several results each, produced by a generator that must not start
    # before the consumer reaches it (a video's decoding thread starts then).
    started: list[int] = []

    def several(i: int):
        started.append(i)
        yield from (f"{i}.{k}" for k in range(i % 4))

    gen = _parallel.prefetch(str, range(10), workers=workers, lookahead=4,
                             inline=lambda i: several(i) if i % 3 == 0 else None)
    first = [next(gen) for _ in range(2)]  # item 0 yields nothing: "1" and "2" come first
    assert first == ["1", "2"]
    assert started == [0]
    assert first + list(gen) == ["1", "2", "3.0", "3.1", "3.2", "4", "5", "6.0", "6.1", "7", "8", "9.0"]
    assert started == [0, 3, 6, 9]


def test_threaded_decoding_gives_the_same_result_and_records_failures(random_pcl_model, photo_paths, tmp_path,
                                                                     monkeypatch):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    inputs = [photo_paths["astronaut.png"], bad, photo_paths["multi_face.jpg"], photo_paths["single_face.jpg"]] * 2
    serial = FaceEmbedder(random_pcl_model, device="cpu", num_workers=0, chunk_size=3).embed(inputs)
    threaded = FaceEmbedder(random_pcl_model, device="cpu", num_workers=2, chunk_size=3)
    shared = threaded.embed(iter(inputs))  # a generator works too
    assert [f.index for f in shared.failures] == [1, 5] == [f.index for f in serial.failures]
    assert shared.num_images == len(inputs)
    assert shared.no_face == serial.no_face
    np.testing.assert_array_equal(serial.image_index, shared.image_index)
    # torch runs on fewer threads while the decoders work: the same numbers up to float rounding (which can
    # move a landmark by 1e-5 px and so round a crop pixel the other way)
    np.testing.assert_allclose(serial.bbox, shared.bbox, rtol=1e-5, atol=1e-3)
    assert _cosine(serial.face, shared.face).min() > 0.99999
    # with torch's threads left alone, decoding in threads changes nothing at all
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
    same = threaded.embed(inputs)
    np.testing.assert_array_equal(serial.bbox, same.bbox)
    np.testing.assert_array_equal(serial.face, same.face)


@pytest.mark.photos
def test_cli_fast_records_its_path_and_keeps_cosine(random_model_dir, photo_paths, tmp_path, capsys):
    import shutil

    from facepcl.cli import main
    from facepcl.export import column_to_numpy, read_embeddings, read_metadata

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("multi_face.jpg", "single_face.jpg", "astronaut.png", "free-mountain-vector-01.jpg"):
        shutil.copy(photo_paths[name], folder / name)
    common = [str(folder), "--model", str(random_model_dir), "--device", "cpu", "--no-progress", "-q"]
    assert main(["embed", *common, "-o", str(tmp_path / "exact"), "--mode", "exact"]) == 0
    assert main(["embed", *common, "-o", str(tmp_path / "fast"), "--num-workers", "2"]) == 0  # fast by default
    exact, fast = read_metadata(tmp_path / "exact"), read_metadata(tmp_path / "fast")
    assert exact["accel"]["encoder"]["dtype"] == "float32"
    assert exact["accel"]["exact"]
    assert exact["accel"]["mode"] == "exact" == exact["detector"]["mode"]
    assert fast["accel"]["mode"] == "fast"
    assert fast["accel"]["encoder"]["channels_last"]
    assert fast["detector"]["dtype"] == fast["accel"]["detector"]["dtype"]
    a, b = read_embeddings(tmp_path / "exact"), read_embeddings(tmp_path / "fast")
    assert a.num_rows == b.num_rows == 7
    assert a.column("path").to_pylist() == b.column("path").to_pylist()
    for k in ("face", "pose", "trunk"):
        assert _cosine(column_to_numpy(a, k), column_to_numpy(b, k)).min() >= MIN_COSINE
    # a resumed export must keep the path it started with: its rows would differ otherwise
    capsys.readouterr()
    assert main(["embed", *common, "-o", str(tmp_path / "exact"), "--mode", "fast", "--resume"]) == 1
    assert "accel" in capsys.readouterr().err


def test_feature_extraction_fast_path_is_close_and_keyed_apart(random_pcl_model, face_photos, tmp_path):
    from facepcl.eval.datasets._base import ArrayImages
    from facepcl.eval.features import extract_features

    src = ArrayImages(np.stack([_crop(im) for im in face_photos]), "RGB", "faces")
    exact = extract_features(random_pcl_model, src, features=("trunk", "face"), input_size=100, cache_dir=tmp_path,
                             device="cpu")
    fast = extract_features(random_pcl_model, src, features=("trunk", "face"), input_size=100, cache_dir=tmp_path,
                            device="cpu", mode="fast")
    assert exact.key != fast.key
    assert "accel" in fast.meta
    assert "accel" not in exact.meta
    for k in ("trunk", "face"):
        assert _cosine(np.asarray(exact.arrays[k]), np.asarray(fast.arrays[k])).min() >= MIN_COSINE


def _crop(image: np.ndarray, size: int = 128) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    return np.asarray(Image.fromarray(image[y:y + side, x:x + side]).resize((size, size)))


def test_options_are_checked(random_pcl_model):
    with pytest.raises(ValueError, match="num_workers"):
        FaceEmbedder(random_pcl_model, num_workers=-1)
    with pytest.raises(TypeError, match=r"unknown detector options \['detector_dtype'\]"):
        FaceEmbedder(random_pcl_model, detector={"detector_dtype": "bf16"})
    with pytest.raises(ValueError, match="unknown dtype"):
        FaceEmbedder(random_pcl_model, dtype="int8")


@pytest.mark.skipif(not os.environ.get("FACEPCL_TEST_CUDA") and not torch.cuda.is_available(),
                    reason="needs CUDA")
def test_cuda_fast_path_matches(random_pcl_model, face_photos):
    model = PCLModel(PCLConfig(name="cuda-copy")).eval()
    model.load_state_dict(random_pcl_model.state_dict())
    ref = FaceEmbedder(model, device="cpu", mode="exact").embed(face_photos)
    fast = FaceEmbedder(model, device="cuda", mode="fast").embed(face_photos)
    for k in ("face", "pose", "trunk"):
        assert _cosine(getattr(ref, k), getattr(fast, k)).min() >= MIN_COSINE


def test_torch_keeps_every_core_while_embedding(random_pcl_model, face_photos, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    for detect, inputs in ((False, [np.zeros((64, 64, 3), np.uint8)] * 3), (True, face_photos[:2])):
        emb = FaceEmbedder(random_pcl_model, device="cpu", detect=detect, num_workers=2, encoder_runtime="torch")
        seen: list[int] = []
        runner = emb._encoder._torch
        emb._encoder._torch = lambda x, runner=runner, seen=seen: (seen.append(torch.get_num_threads()), runner(x))[1]
        emb.embed(inputs)
        assert seen, (detect, seen)
        assert set(seen) == {before}, (detect, seen)


def test_import_changes_no_environment_and_the_command_waits_passively():
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = [sys.executable, "-c"]
    code = "import facepcl, os; facepcl.embed; print(os.environ.get('OMP_WAIT_POLICY'))"
    assert subprocess.run([*run, code], env=env, capture_output=True, text=True, check=True).stdout.split() == ["None"]
    # the facepcl command sets it before anything imports torch; a user's own choice stands
    cli = ("import atexit, os, sys; import facepcl.cli\n"
           "atexit.register(lambda: print('POLICY', os.environ.get('OMP_WAIT_POLICY')))\n"
           "sys.argv = ['facepcl', 'models']; facepcl.cli.run()")
    out = subprocess.run([*run, cli], env=env, capture_output=True, text=True, check=True).stdout
    assert "POLICY PASSIVE" in out
    out = subprocess.run([*run, cli], env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, capture_output=True, text=True,
                         check=True).stdout
    assert "POLICY ACTIVE" in out
    # the explicit call for library users: before torch it sets the policy, after torch it warns and changes nothing
    code = "import facepcl.runtime as r; print(r.set_wait_policy())"
    assert subprocess.run([*run, code], env=env, capture_output=True, text=True, check=True).stdout.split() == [
        "PASSIVE"]
    late = subprocess.run([*run, "import torch, facepcl.runtime as r; print(r.set_wait_policy())"], env=env,
                          capture_output=True, text=True, check=True)
    assert late.stdout.split() == ["None"]
    assert "before importing torch" in late.stderr


def test_onnx_detector_is_exported_once_into_the_cache(monkeypatch, tmp_path, face_photos):
    monkeypatch.setenv("FACEPCL_HOME", str(tmp_path))
    first = FaceDetector(device="cpu", mode="fast")
    assert first.runtime == "onnxruntime"
    files = list((tmp_path / "detectors").glob("*.onnx"))
    assert len(files) == 1
    assert not list((tmp_path / "detectors").glob(".*tmp*"))
    stamp = files[0].stat().st_mtime_ns
    second = FaceDetector(device="cpu", mode="fast")
    assert files[0].stat().st_mtime_ns == stamp  # reused, not exported again
    torch_fast = FaceDetector(device="cpu", mode="fast", runtime="torch")
    a, b = second.detect(face_photos[0]), torch_fast.detect(face_photos[0])
    assert len(a) == len(b)
    assert np.abs(a.kps - b.kps).max() < 1e-2
    with pytest.raises(ValueError, match="onnxruntime"):
        FaceDetector(device="cpu", runtime="onnxruntime")  # the exact network runs in torch
