"""facepcl.embed / FaceEmbedder end to end on real photos with random-weight PCL models."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import facepcl
from facepcl import EmbeddingResult, FaceEmbedder, ImageLoadError, ModelLoadError, NoFaceError
from facepcl.config import feature_dim
from facepcl.detection import FaceDetector
from facepcl.pipeline import _embedder as pipeline_mod
from facepcl.registry import get_model_info

FIELDS = ("face", "pose", "trunk", "bbox", "kps", "det_score", "image_index")


@pytest.fixture(scope="module")
def embedder(shared_random_pcl_model) -> FaceEmbedder:
    return FaceEmbedder(shared_random_pcl_model, device="cpu")


def assert_same_faces(a: EmbeddingResult, b: EmbeddingResult, atol: float = 1e-4) -> None:
    assert len(a) == len(b)
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if name == "image_index":
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, atol=atol, rtol=1e-4, equal_nan=True, err_msg=name)


def test_group_photo_one_record_per_face(embedder, photo_paths, photos):
    res = embedder(str(photo_paths["multi_face.jpg"]))
    assert len(res) == 5
    assert res.num_images == 1
    assert not res.failures
    assert not res.no_face
    dim = feature_dim(64)
    for name in ("face", "pose", "trunk"):
        arr = getattr(res, name)
        assert arr.shape == (5, dim)
        assert arr.dtype == np.float32
        assert np.isfinite(arr).all()
    assert res.bbox.shape == (5, 4)
    assert res.kps.shape == (5, 5, 2)
    assert res.det_score.shape == (5,)
    assert res.image_index.dtype == np.int64
    assert (res.image_index == 0).all()
    det = embedder.detector.detect(photos["multi_face.jpg"])  # the result holds its detector's faces
    np.testing.assert_allclose(res.bbox, det.boxes)
    np.testing.assert_allclose(res.kps, det.kps)
    # different faces give different embeddings
    assert np.linalg.matrix_rank(res.face.astype(np.float64)) == 5
    assert res.info["crop_size"] == 64
    assert res.info["detector"] == "retinaface_mobile0.25"
    assert res.crops is None


@pytest.mark.slow
def test_every_input_kind_gives_the_same_result(embedder, photo_paths):
    path = photo_paths["astronaut.png"]
    ref = embedder(path)
    assert len(ref) == 1
    arr = np.array(Image.open(path).convert("RGB"))
    inputs = [str(path), Path(path), Path(path).read_bytes(), Image.open(path), arr,
              torch.from_numpy(arr).permute(2, 0, 1), torch.from_numpy(arr).permute(2, 0, 1).float() / 255,
              arr.astype(np.uint16) * 257, arr.astype(np.float32) / 255]
    for x in inputs:
        assert_same_faces(embedder(x), ref)
    # BGR arrays with the option give the RGB result
    bgr = FaceEmbedder(embedder.model, color_order="BGR")
    assert_same_faces(bgr(np.ascontiguousarray(arr[..., ::-1])), ref)


def test_grayscale_and_rgba_inputs(embedder, photo_paths, photos):
    gray = embedder(photo_paths["BWPictureHuman.jpg"])
    assert len(gray) == 1
    assert np.isfinite(gray.trunk).all()
    g = photos["BWPictureHuman.jpg"][..., 0]
    assert_same_faces(embedder(g), gray)  # a 2-D array is the same grayscale picture
    rgba = embedder(photo_paths["Image_with_alpha.png"])
    assert len(rgba) == 1
    assert_same_faces(embedder(np.asarray(Image.open(photo_paths["Image_with_alpha.png"]))), rgba)


@pytest.mark.slow
def test_batched_equals_one_at_a_time(embedder, photo_paths):
    names = ["multi_face.jpg", "single_face.jpg", "astronaut.png", "Image_with_alpha.png"]
    paths = [photo_paths[n] for n in names]
    batch = embedder(paths)
    assert batch.num_images == 4
    assert len(batch) == 8
    for i, p in enumerate(paths):
        one = embedder(p)
        part = batch.for_image(i)
        one.image_index[:] = i
        assert_same_faces(part, one)
    # small chunks (streaming) and a generator give the same result
    streamed = FaceEmbedder(embedder.model, chunk_size=2, batch_size=3, detector={"batch_size": 2})(p for p in paths)
    assert_same_faces(streamed, batch)


def test_batch_of_arrays(embedder, photos):
    astro = photos["astronaut.png"]
    res = embedder(np.stack([astro, astro[:, ::-1]]))
    assert res.num_images == 2
    assert list(res.image_index) == [0, 1]


def _mixed_folder(tmp_path: Path, photo_paths, bad_files) -> list[Path]:
    folder = tmp_path / "mixed"
    folder.mkdir()
    order = [("a_group.jpg", photo_paths["multi_face.jpg"]), ("b_corrupt.png", bad_files["corrupt"]),
             ("c_single.jpg", photo_paths["single_face.jpg"]), ("d_truncated.jpg", bad_files["truncated"]),
             ("e_empty.jpg", bad_files["empty"]), ("f_notes.csv", bad_files["not_an_image"]),
             ("g_float.tif", bad_files["unsupported_mode"]), ("h_bomb.png", bad_files["bomb"]),
             ("i_landscape.jpg", photo_paths["free-mountain-vector-01.jpg"]),
             ("j_astronaut.png", photo_paths["astronaut.png"])]
    for name, src in order:
        shutil.copy(src, folder / name)
    return sorted(folder.iterdir())


def test_folder_of_good_and_bad_files_loses_no_good_result(embedder, tmp_path, photo_paths, bad_files):
    files = _mixed_folder(tmp_path, photo_paths, bad_files)
    inputs: list = [*files, np.zeros((0, 10, 3), np.uint8)]  # plus a zero-size array
    res = FaceEmbedder(embedder.model, chunk_size=4)(inputs)
    assert res.num_images == 11
    failed = {f.index: f for f in res.failures}
    assert sorted(failed) == [1, 3, 4, 5, 6, 7, 10]
    expected = {1: "corrupt", 3: "truncated", 4: "empty file", 5: "not a recognised image format",
                6: "unsupported image mode", 7: "decompression bomb", 10: "zero-size"}
    for i, text in expected.items():
        assert text in failed[i].reason
        assert failed[i].input == (str(files[i]) if i < 10 else "<numpy.ndarray shape=(0, 10, 3) dtype=uint8>")
    assert res.no_face == [8]
    for i in (0, 2, 9):
        one = embedder(files[i])
        one.image_index[:] = i
        assert_same_faces(res.for_image(i), one)
    assert len(res) == 5 + 1 + 1


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "empty", "not_an_image", "unsupported_mode", "bomb"])
def test_single_bad_input_raises_naming_it(embedder, bad_files, kind):
    with pytest.raises(ImageLoadError) as info:
        embedder(bad_files[kind])
    assert str(bad_files[kind]) in str(info.value)


def test_single_zero_size_array_raises(embedder):
    with pytest.raises(ImageLoadError, match=r"zero-size image.*\(0, 10, 3\)"):
        embedder(np.zeros((0, 10, 3), np.uint8))


def test_on_no_face_modes(random_pcl_model, photo_paths, photos):
    landscape = photo_paths["free-mountain-vector-01.jpg"]
    skip = FaceEmbedder(random_pcl_model)(landscape)
    assert len(skip) == 0
    assert skip.no_face == [0]
    assert skip.face.shape == (0, feature_dim(64))
    with pytest.raises(NoFaceError, match=r"free-mountain-vector-01\.jpg.*on_no_face"):
        FaceEmbedder(random_pcl_model, on_no_face="error")([photo_paths["astronaut.png"], landscape])
    full = FaceEmbedder(random_pcl_model, on_no_face="full_image", return_crops=True)(landscape)
    assert len(full) == 1
    assert full.no_face == [0]
    h, w = photos["free-mountain-vector-01.jpg"].shape[:2]
    np.testing.assert_array_equal(full.bbox, [[0, 0, w, h]])
    assert np.isnan(full.kps).all()
    assert np.isnan(full.det_score).all()
    assert np.isfinite(full.face).all()
    # the whole landscape, letterboxed: black bands above and below, picture in the middle
    crop = full.crops[0]
    assert crop[:8].max() == 0
    assert crop[-8:].max() == 0
    assert crop[28:36].mean() > 20
    with pytest.raises(ValueError, match="on_no_face"):
        FaceEmbedder(random_pcl_model, on_no_face="ignore")


def test_max_faces_and_min_face_size(random_pcl_model, photo_paths):
    group = photo_paths["multi_face.jpg"]
    full = FaceEmbedder(random_pcl_model)(group)
    top2 = FaceEmbedder(random_pcl_model, detector={"max_faces": 2})(group)
    assert len(top2) == 2
    np.testing.assert_allclose(top2.det_score, full.det_score[:2])
    np.testing.assert_allclose(top2.face, full.face[:2], atol=1e-5)
    big = facepcl.embed(group, model=random_pcl_model, min_face_size=110)
    sides = np.minimum(full.bbox[:, 2] - full.bbox[:, 0], full.bbox[:, 3] - full.bbox[:, 1])
    assert len(big) == int((sides >= 110).sum()) < 5
    with pytest.raises(ValueError, match=r"\['max_faces'\] configure the detector.*set them on it"):
        facepcl.embed(group, model=random_pcl_model, detector=FaceDetector(device="cpu"), max_faces=1)


def test_crops_and_align_false_round_trip(random_pcl_model, photo_paths):
    res = FaceEmbedder(random_pcl_model, return_crops=True)(photo_paths["multi_face.jpg"])
    assert res.crops.shape == (5, 64, 64, 3)
    assert res.crops.dtype == np.uint8
    # feeding the aligned crops back with detect=False reproduces the embeddings exactly
    again = FaceEmbedder(random_pcl_model, detect=False, return_crops=True)(list(res.crops))
    assert len(again) == 5
    assert list(again.image_index) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(again.crops, res.crops)
    np.testing.assert_allclose(again.face, res.face, atol=1e-5)
    assert np.isnan(again.det_score).all()
    assert again.info["detector"] is None
    # already-aligned crops of another size are resized to the crop
    big = [cv2.resize(c, (100, 100), interpolation=cv2.INTER_CUBIC) for c in res.crops[:2]]
    resized = FaceEmbedder(random_pcl_model, detect=False, return_crops=True)(big)
    assert resized.crops.shape == (2, 64, 64, 3)
    assert np.abs(resized.crops.astype(int) - res.crops[:2]).mean() < 6


def test_eyes_land_on_the_template_in_the_aligned_crops(random_pcl_model, photo_paths, cpu_detector):
    # Detect again inside the aligned crops: the eyes sit where the template puts them.
    emb = FaceEmbedder(random_pcl_model, crop_size=128, return_crops=True)
    tmpl = emb.template
    res = emb([photo_paths["multi_face.jpg"], photo_paths["astronaut.png"]])
    assert len(res) == 6
    pad = 64
    for crop in res.crops:
        det = cpu_detector.detect(cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_CONSTANT))
        assert len(det) == 1
        eyes = det.kps[0, :2] - pad
        assert np.linalg.norm(eyes - tmpl[:2], axis=1).max() < 0.06 * 128


def test_crop_size_option(random_pcl_model, photo_paths):
    res = FaceEmbedder(random_pcl_model, crop_size=112, return_crops=True)(photo_paths["astronaut.png"])
    assert res.trunk.shape == (1, feature_dim(112)) == (1, 6272)
    assert res.crops.shape == (1, 112, 112, 3)
    x64 = random_pcl_model.config.preprocess.template[0][0]
    assert res.info["template"][0][0] == pytest.approx((x64 + 0.5) * 112 / 64 - 0.5, abs=1e-3)
    for bad in (8, 50.5, "64"):
        with pytest.raises(ValueError, match="at least 16"):
            FaceEmbedder(random_pcl_model, crop_size=bad)


def test_bf16_autocast_is_close_to_float32(random_pcl_model, photo_paths):
    ref = FaceEmbedder(random_pcl_model)(photo_paths["astronaut.png"])
    low = FaceEmbedder(random_pcl_model, dtype="bf16")(photo_paths["astronaut.png"])
    assert low.face.dtype == np.float32
    assert low.info["dtype"] == "bfloat16"
    for name in ("face", "pose", "trunk"):
        a, b = getattr(ref, name)[0], getattr(low, name)[0]
        assert np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99
    assert next(random_pcl_model.parameters()).dtype == torch.float32  # the model itself is untouched


def test_model_by_folder_env_and_default(random_model_dir, photo_paths, monkeypatch):
    res = facepcl.embed(photo_paths["astronaut.png"], model=random_model_dir, device="cpu")
    assert len(res) == 1
    assert res.info["model_id"] == str(random_model_dir)
    monkeypatch.setenv("FACEPCL_MODEL", str(random_model_dir))
    from_env = facepcl.embed(photo_paths["astronaut.png"], device="cpu")
    np.testing.assert_allclose(from_env.face, res.face)
    monkeypatch.delenv("FACEPCL_MODEL")
    info = get_model_info("pcl-demo")
    if info is not None and info.available():
        pytest.skip("the bundled default model exists in this installation")
    with pytest.raises(ModelLoadError, match="FACEPCL_MODEL"):
        facepcl.embed(photo_paths["astronaut.png"])


def test_embed_caches_its_embedder(random_model_dir, photo_paths):
    pipeline_mod._DEFAULT_CACHE.clear()
    facepcl.embed(photo_paths["astronaut.png"], model=random_model_dir, device="cpu", max_faces=1)
    first = list(pipeline_mod._DEFAULT_CACHE.values())
    facepcl.embed(photo_paths["astronaut.png"], model=random_model_dir, device="cpu", max_faces=1)
    assert list(pipeline_mod._DEFAULT_CACHE.values()) == first
    assert len(first) == 1
    # the key holds the split options: the same detector options, flat or in detector=, are one embedder
    facepcl.embed(photo_paths["astronaut.png"], model=random_model_dir, device="cpu", detector={"max_faces": 1})
    assert list(pipeline_mod._DEFAULT_CACHE.values()) == first
    facepcl.embed(photo_paths["astronaut.png"], model=random_model_dir, device="cpu", max_faces=2)
    assert len(pipeline_mod._DEFAULT_CACHE) == 2
    assert [e.detector.max_faces for e in pipeline_mod._DEFAULT_CACHE.values()] == [1, 2]


@pytest.mark.slow
def test_separable_steps_and_result_helpers(embedder, photos):
    images = [photos["multi_face.jpg"], photos["free-mountain-vector-01.jpg"], photos["astronaut.png"]]
    whole = embedder(images)
    # decode elsewhere, then embed_loaded with global indices, in two chunks
    a = embedder.embed_loaded(images[:2], indices=[0, 1])
    b = embedder.embed_loaded(images[2:], indices=[2])
    joined = EmbeddingResult.concatenate([a, b])
    assert_same_faces(joined, whole)
    assert joined.num_images == 3
    assert joined.no_face == [1] == whole.no_face
    per = whole.per_image()
    assert [len(r) for r in per] == [5, 0, 1]
    assert len(whole.select(whole.det_score > 0.999)) == int((whole.det_score > 0.999).sum())
    # the steps one by one give the same features
    dets = embedder.detect_faces(images[:1])
    crops = embedder.crop(images[0], dets[0].kps)
    feats = embedder.encode(crops)
    np.testing.assert_allclose(feats["trunk"], whole.for_image(0).trunk, atol=1e-4, rtol=1e-4)
    assert "6 faces from 3 images" in repr(whole)
