"""FaceEmbedder's helpers: repr, to_torch, per-image parts, any crop size, option names, head features reused."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import facepcl
from facepcl.config import feature_dim
from facepcl.heads import HeadSpec, TaskHead, attach_head, predict_crops
from facepcl.pipeline import EmbeddingResult, FaceEmbedder, Failure, embed


def _crops(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, size, size, 3)) * 255).astype(np.uint8)


def test_repr_names_model_device_plan_crop_and_detection(random_pcl_model):
    text = repr(FaceEmbedder(random_pcl_model, exact=True, crop_size=100, det_threshold=0.6, on_no_face="error"))
    for part in ("model=", "device='cpu'", "encoder=exact (float32)", "crop_size=100", "dim=6272", "detect=True",
                 "det_threshold=0.6", "on_no_face='error'"):
        assert part in text, (part, text)
    text = repr(FaceEmbedder(random_pcl_model, detect=False))
    assert "detect=False" in text
    assert "det_threshold" not in text
    assert "crop_size=64" in text


def test_to_torch_gives_tensors_sharing_memory(random_pcl_model):
    res = FaceEmbedder(random_pcl_model, detect=False, return_crops=True)(list(_crops(3)))
    out = res.to_torch()
    assert out["face"].shape == (3, 2048)
    assert out["face"].dtype == torch.float32
    assert out["image_index"].dtype == torch.int64
    assert out["crops"].shape == (3, 64, 64, 3)
    assert out["trunk"].data_ptr() == res.trunk.__array_interface__["data"][0]  # no copy on the CPU
    np.testing.assert_array_equal(out["kps"].numpy(), res.kps)
    assert "crops" not in FaceEmbedder(random_pcl_model, detect=False)(_crops(1)[0]).to_torch()


def test_per_image_parts_hold_only_their_own_failures_and_counts(random_pcl_model, photo_paths):
    landscape = photo_paths["free-mountain-vector-01.jpg"]
    inputs = [photo_paths["astronaut.png"], "missing.jpg", landscape]
    res = FaceEmbedder(random_pcl_model)(inputs)
    assert res.num_images == 3
    assert [f.index for f in res.failures] == [1]
    assert res.no_face == [2]
    face, failed, empty = res.per_image()
    assert face.num_images == failed.num_images == empty.num_images == 1
    assert len(face) == 1
    assert face.failures == []
    assert face.no_face == []
    assert len(failed) == 0
    assert [f.index for f in failed.failures] == [1]
    assert failed.no_face == []
    assert isinstance(failed.failures[0], Failure)
    assert "missing.jpg" in failed.failures[0].input
    assert len(empty) == 0
    assert empty.failures == []
    assert empty.no_face == [2]
    # indices keep their meaning in the whole call
    assert list(face.image_index) == [0]
    assert res.for_image(2).no_face == [2]
    joined = EmbeddingResult.concatenate(res.per_image())
    assert joined.num_images == 3
    assert joined.failures == res.failures
    assert joined.no_face == [2]


def test_crop_size_100_matches_the_encoder_at_100_px(random_pcl_model):
    crop = _crops(1, 100)[0]
    res = embed(crop, model=random_pcl_model, detect=False, crop_size=100, exact=True)
    assert res.face.shape == (1, feature_dim(100)) == (1, 6272)
    with torch.no_grad():
        feats = random_pcl_model.encoder(facepcl.transforms(random_pcl_model, crop_size=100)(crop)[None])
    np.testing.assert_array_equal(res.trunk, feats.trunk.numpy())
    odd = FaceEmbedder(random_pcl_model, detect=False, crop_size=40)(crop)  # not a multiple of 16: ceil(40/16) = 3
    assert odd.face.shape == (1, 128 * 3 * 3)


def test_old_option_names_still_work_with_a_warning(random_pcl_model):
    with pytest.warns(DeprecationWarning, match="'align' is deprecated, use 'detect'"):
        old = FaceEmbedder(random_pcl_model, align=False)
    assert old.detects is False
    with pytest.warns(DeprecationWarning, match="'conf_threshold' is deprecated"):
        assert FaceEmbedder(random_pcl_model, conf_threshold=0.5).detector.det_threshold == 0.5
    with pytest.warns(DeprecationWarning, match="'raise' is deprecated"):
        assert FaceEmbedder(random_pcl_model, on_no_face="raise").on_no_face == "error"
    with pytest.warns(DeprecationWarning, match="facepcl.embed: 'align'"):
        res = embed(_crops(1)[0], model=random_pcl_model, align=False)
    assert len(res) == 1
    assert res.info["detect"] is False
    with pytest.raises(TypeError, match="unexpected keyword"):
        FaceEmbedder(random_pcl_model, detekt=False)
    with pytest.raises(TypeError, match="both 'align' and 'detect'"):
        embed(_crops(1)[0], model=random_pcl_model, align=False, detect=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FaceEmbedder(random_pcl_model, detect=False, det_threshold=None, on_no_face="error")


def _head(name: str, size: int) -> TaskHead:
    torch.manual_seed(size)
    spec = HeadSpec(name=name, task="regression", features=["trunk"], input_size=size, in_dim=feature_dim(size),
                    out_dim=3, label_names=["yaw", "pitch", "roll"])
    return TaskHead(spec)


def test_heads_at_the_crop_size_reuse_the_encoded_features(random_pcl_model):
    model = attach_head(random_pcl_model, _head("pose", 64), check_encoder=False)
    calls = []
    model.encoder.register_forward_hook(lambda *_: calls.append(1))
    crops = list(_crops(3))
    embedder = FaceEmbedder(model, detect=False, exact=True, return_crops=True)
    res = embedder(crops)
    assert len(calls) == 1  # one forward for embeddings and the head together
    np.testing.assert_allclose(res.predictions["pose"].scores,
                               predict_crops(model, res.crops, names=["pose"])["pose"].scores, atol=1e-5)
    attach_head(model, _head("fer", 96), check_encoder=False)
    calls.clear()
    res = embedder(crops)
    assert len(calls) == 2
    assert sorted(res.predictions) == ["fer", "pose"]  # the 96 px head needs its own forward
