"""Feature computation and its on-disk cache: right values, computed once, invalidated when anything changes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from facepcl import PCLConfig, PCLModel
from facepcl.eval.datasets import ArrayImages, PathImages
from facepcl.eval.features import extract_features, feature_key


@pytest.fixture()
def model():
    torch.manual_seed(7)
    return PCLModel(PCLConfig()).eval()


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        p = tmp_path / "img" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return PathImages(paths)


def _count_forwards(model):
    calls = []
    model.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    return calls


def test_features_match_the_encoder_on_the_same_pixels(model, images, tmp_path):
    fs = extract_features(model, images, features=("trunk", "face", "pose"), input_size=32, cache_dir=tmp_path / "c",
                          batch_size=2, device="cpu")
    x = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in images.paths])
    with torch.no_grad():
        ref = model.encoder(x.float() / 255.0)
    for name in ("trunk", "face", "pose"):
        np.testing.assert_allclose(fs.arrays[name], getattr(ref, name).numpy(), rtol=1e-4, atol=1e-5)
    assert fs.arrays["trunk"].shape == (5, 512)  # 128 * 2 * 2 at 32 px
    np.testing.assert_array_equal(fs.matrix(["face", "pose"])[:, 512:], fs.arrays["pose"])


def test_second_call_reads_the_cache_without_encoding(model, images, tmp_path):
    calls = _count_forwards(model)
    a = extract_features(model, images, input_size=32, cache_dir=tmp_path, device="cpu")
    n = len(calls)
    assert n > 0
    assert a.folder is not None
    assert (a.folder / "trunk.npy").is_file()
    b = extract_features(model, images, input_size=32, cache_dir=tmp_path, device="cpu")
    assert len(calls) == n  # nothing recomputed
    assert isinstance(b.arrays["trunk"], np.memmap)
    np.testing.assert_array_equal(a.arrays["trunk"], b.arrays["trunk"])
    assert b.folder == a.folder
    assert b.meta["input_size"] == 32


def test_cache_invalidated_by_images_weights_size_and_choice(model, images, tmp_path):
    base = extract_features(model, images, input_size=32, cache_dir=tmp_path, device="cpu")
    # a changed image file (new content, new mtime) gives a new entry with new values
    p = images.paths[0]
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(p)
    os.utime(p, ns=(os.stat(p).st_atime_ns, os.stat(p).st_mtime_ns + 10**9))
    changed = extract_features(model, images, input_size=32, cache_dir=tmp_path, device="cpu")
    assert changed.key != base.key
    assert not np.allclose(changed.arrays["trunk"][0], base.arrays["trunk"][0])
    np.testing.assert_array_equal(changed.arrays["trunk"][1:], base.arrays["trunk"][1:])
    # other input size, other features, other weights: other keys
    keys = {changed.key}
    keys.add(extract_features(model, images, input_size=48, cache_dir=tmp_path, device="cpu").key)
    keys.add(extract_features(model, images, features="face", input_size=32, cache_dir=tmp_path, device="cpu").key)
    with torch.no_grad():
        model.encoder.trunk.stem[0].bias.add_(0.1)
    keys.add(extract_features(model, images, input_size=32, cache_dir=tmp_path, device="cpu").key)
    assert len(keys) == 4


def test_broken_cache_entry_is_recomputed(model, images, tmp_path):
    a = extract_features(model, images, input_size=32, cache_dir=tmp_path, device="cpu")
    expected = np.array(a.arrays["trunk"])
    folder = a.folder
    del a
    (folder / "trunk.npy").write_bytes(b"not an npy")
    b = extract_features(model, images, input_size=32, cache_dir=tmp_path, device="cpu")
    np.testing.assert_array_equal(b.arrays["trunk"], expected)


def test_array_images_resize_float16_and_no_cache(model, tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    src = ArrayImages(arr, "BGR", "x.npz")
    fs = extract_features(model, src, input_size=32, cache=False, dtype="float16", device="cpu")
    assert fs.folder is None
    assert fs.arrays["trunk"].dtype == np.float16
    # BGR bytes are converted: the same pixels given as RGB produce the same features
    rgb = ArrayImages(np.ascontiguousarray(arr[..., ::-1]), "RGB", "y.npz")
    fs2 = extract_features(model, rgb, input_size=32, cache=False, device="cpu")
    np.testing.assert_allclose(fs.arrays["trunk"].astype(np.float32), fs2.arrays["trunk"], rtol=2e-3, atol=2e-3)
    k1, _ = feature_key(model, src, features=("trunk",), input_size=32, interpolation="bilinear", detect=False,
                        dtype="float32")
    k2, _ = feature_key(model, rgb, features=("trunk",), input_size=32, interpolation="bilinear", detect=False,
                        dtype="float32")
    assert k1 != k2


def test_bad_arguments(model, images, tmp_path):
    with pytest.raises(ValueError, match="features"):
        extract_features(model, images, features="nose", input_size=32, cache=False)
    with pytest.raises(ValueError, match=r"extract_features: mode must be one of \('fast', 'exact'\)"):
        extract_features(model, images, input_size=32, mode="sideways", cache=False)
    with pytest.raises(TypeError, match="align"):
        extract_features(model, images, input_size=32, align="detect", cache=False)


@pytest.mark.slow
@pytest.mark.photos
def test_detect_mode_aligns_real_faces_and_marks_faceless_images(model, photo_paths, tmp_path):
    imgs = PathImages([photo_paths["single_face.jpg"], photo_paths["free-mountain-vector-01.jpg"]])
    fs = extract_features(model, imgs, input_size=48, detect=True, cache_dir=tmp_path, device="cpu")
    assert fs.valid.tolist() == [True, False]
    assert np.abs(fs.arrays["trunk"][0]).sum() > 0
    assert not fs.arrays["trunk"][1].any()
    # the detected face, warped straight to 48 px with the model's template, is what was encoded
    from facepcl.align import align_faces
    from facepcl.detection import FaceDetector
    from facepcl.io import load_image
    from facepcl.preprocess import to_input

    img = load_image(photo_paths["single_face.jpg"])
    det = FaceDetector(device="cpu").detect_batch([img])[0]
    crop = align_faces(img, det.kps[np.argmax(det.scores)][None], model.config.preprocess, crop_size=48)[0]
    with torch.no_grad():
        ref = model.encoder(to_input(list(crop), 48, "bilinear", model.config.preprocess)).trunk.numpy()
    np.testing.assert_allclose(fs.arrays["trunk"][0], ref[0], rtol=1e-4, atol=1e-5)
