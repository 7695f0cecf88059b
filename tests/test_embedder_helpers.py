"""FaceEmbedder's helpers: repr, to_torch, per-image parts, any crop size, options and their owners, heads."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch

import facepcl
from facepcl._utils.digest import encoder_digest
from facepcl.config import feature_dim
from facepcl.detection import FaceDetector
from facepcl.heads import HeadSpec, TaskHead, attach_head, predict_crops
from facepcl.pipeline import EmbeddingResult, FaceEmbedder, Failure, embed


def _crops(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, size, size, 3)) * 255).astype(np.uint8)


def test_repr_names_model_device_plan_crop_and_detection(random_pcl_model):
    text = repr(FaceEmbedder(random_pcl_model, mode="exact", crop_size=100, detector={"det_threshold": 0.6},
                             on_no_face="error"))
    for part in ("model=", "device='cpu'", "mode='exact'", "encoder=exact (torch, float32)", "crop_size=100",
                 "dim=6272", "detect=True", "det_threshold=0.6", "on_no_face='error'"):
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
    res = embed(crop, model=random_pcl_model, detect=False, crop_size=100, mode="exact")
    assert res.face.shape == (1, feature_dim(100)) == (1, 6272)
    with torch.no_grad():
        feats = random_pcl_model.encoder(facepcl.transforms(random_pcl_model, crop_size=100)(crop)[None])
    np.testing.assert_array_equal(res.trunk, feats.trunk.numpy())
    odd = FaceEmbedder(random_pcl_model, detect=False, crop_size=40)(crop)  # not a multiple of 16: ceil(40/16) = 3
    assert odd.face.shape == (1, 128 * 3 * 3)


def test_every_option_has_one_owner_and_its_own_attribute(random_pcl_model):
    params = inspect.signature(FaceEmbedder).parameters
    assert len(params) <= 15  # a new option must earn its place
    assert next(iter(params)) == "model"
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for n, p in params.items() if n != "model")
    emb = FaceEmbedder(random_pcl_model, detect=False)
    for name in FaceEmbedder.options():
        assert hasattr(emb, name), name
    assert emb.detect is False
    assert emb.mode == "fast"
    # the detector's options are its own: none of them is also a FaceEmbedder option but the shared ones
    assert set(FaceDetector.options()) & set(FaceEmbedder.options()) == {"device", "mode", "dtype", "batch_size"}


def test_embed_splits_detector_keywords(random_pcl_model, photo_paths):
    group = photo_paths["multi_face.jpg"]
    flat = embed(group, model=random_pcl_model, mode="exact", det_threshold=0.5, max_faces=1)
    nested = FaceEmbedder(random_pcl_model, mode="exact", detector={"det_threshold": 0.5, "max_faces": 1})(group)
    assert len(flat) == len(nested) == 1
    np.testing.assert_array_equal(flat.face, nested.face)
    np.testing.assert_array_equal(flat.bbox, nested.bbox)
    two = embed(group, model=random_pcl_model, mode="exact", det_threshold=0.5, max_faces=2)  # another cache entry
    assert len(two) == 2
    np.testing.assert_allclose(two.face[:1], flat.face, atol=1e-5)  # encoded in a batch of 2


def test_every_detector_option_is_reachable(random_pcl_model):
    reference = FaceDetector(device="cpu", mode="fast", runtime="torch", batch_size=3, canvas_step=64,
                             max_faces=2, min_face_size=4.0, sort_by="size", rescue_threshold=None, max_size=320,
                             det_threshold=0.7, nms_threshold=0.3, download=False)
    for name in FaceDetector.options():
        value = getattr(reference, name)
        emb = FaceEmbedder(random_pcl_model, device="cpu", mode="exact", detector={name: value})
        assert emb.detector_option(name) == value, name
        assert getattr(emb.detector, name) == value, name
    # flat through facepcl.embed: every detector option FaceEmbedder does not take, but those naming the network
    flat = [n for n in FaceDetector.options() if n not in FaceEmbedder.options() and n not in ("name", "weights")]
    assert {"det_threshold", "max_faces", "min_face_size", "nms_threshold", "max_size"} <= set(flat)
    crop = _crops(1)[0]
    for name in flat:
        res = embed(crop, model=random_pcl_model, detect=False, **{name: getattr(reference, name)})
        assert len(res) == 1, name


def test_unknown_and_removed_options_are_errors_naming_the_valid_ones(random_pcl_model):
    crop = _crops(1)[0]
    for old in ("align", "conf_threshold", "fast", "exact", "detector_dtype", "detect_batch_size", "detekt"):
        with pytest.raises(TypeError, match=rf"unknown options \['{old}'\]; FaceEmbedder takes .*'detect'.*"
                                            r"the detector .*'det_threshold'"):
            embed(crop, model=random_pcl_model, detect=False, **{old: True})
        with pytest.raises(TypeError, match=old):
            FaceEmbedder(random_pcl_model, **{old: True})
    with pytest.raises(TypeError, match="max_faces"):
        FaceEmbedder(random_pcl_model, max_faces=1)  # a detector option: detector={"max_faces": 1}
    with pytest.raises(TypeError, match=r"unknown detector options \['conf_threshold'\]; FaceDetector takes"):
        FaceEmbedder(random_pcl_model, detector={"conf_threshold": 0.5})
    with pytest.raises(TypeError, match="conf_threshold"):
        FaceDetector(device="cpu", conf_threshold=0.5)
    with pytest.raises(ValueError, match=r"on_no_face must be one of \('skip', 'error', 'full_image'\), got 'raise'"):
        FaceEmbedder(random_pcl_model, on_no_face="raise")
    with pytest.raises(TypeError, match="detector= takes a FaceDetector, a detector name or a dict"):
        FaceEmbedder(random_pcl_model, detector=0.5)
    with pytest.raises(ValueError, match=r"\['max_faces'\] given both as keywords and in detector="):
        embed(crop, model=random_pcl_model, detector={"max_faces": 2}, max_faces=1)
    with pytest.raises(ValueError, match="max_faces must be a positive integer"):  # checked now, built later
        FaceEmbedder(random_pcl_model, detector={"max_faces": 0})
    with pytest.raises(ValueError, match="FaceDetector: mode must be one of"):
        FaceDetector(device="cpu", mode="fastest")


def test_detector_is_built_lazily_with_the_embedders_device_and_mode(random_pcl_model):
    emb = FaceEmbedder(random_pcl_model, device="cpu", mode="exact", detector="retinaface_mobile0.25")
    default = random_pcl_model.config.detector.det_threshold
    assert emb._detector is None
    assert emb.detector_option("det_threshold") == default
    det = emb.detector
    assert (det.mode, str(det.device), det.name) == ("exact", "cpu", "retinaface_mobile0.25")
    assert det.plan.exact
    assert FaceEmbedder(random_pcl_model, mode="exact", detector={"mode": "fast"}).detector.mode == "fast"
    own = FaceDetector(device="cpu", max_faces=1)
    assert FaceEmbedder(random_pcl_model, detector=own).detector is own
    off = FaceEmbedder(random_pcl_model, detect=False, detector={"det_threshold": 0.3})
    off(_crops(1)[0])
    assert off._detector is None  # never built without detection


def test_provenance_reports_the_detectors_own_settings(random_pcl_model):
    emb = FaceEmbedder(random_pcl_model, device="cpu", mode="exact", detector={"max_faces": 3, "sort_by": "size"})
    prov = emb.provenance()
    assert prov["detector"] == emb.detector.settings()
    assert prov["max_faces"] == 3
    assert prov["detector"]["sort_by"] == "size"
    assert prov["detector"]["mode"] == "exact"
    assert set(prov["detector"]) == set(FaceDetector.options()) - {"device", "batch_size", "download"}
    assert prov["encoder_sha256"] == encoder_digest(random_pcl_model)
    assert prov["feature_dim"] == emb.dim
    assert prov["accel"] == emb.accel_info()
    assert prov["detect"] is True
    json.dumps(prov)  # JSON-ready
    bare = FaceEmbedder(random_pcl_model, detect=False).provenance()
    assert bare["detector"] is None
    assert bare["max_faces"] is None
    assert bare["detect"] is False


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
    embedder = FaceEmbedder(model, detect=False, mode="exact", return_crops=True)
    res = embedder(crops)
    assert len(calls) == 1  # one forward for embeddings and the head together
    np.testing.assert_allclose(res.predictions["pose"].scores,
                               predict_crops(model, res.crops, names=["pose"])["pose"].scores, atol=1e-5)
    attach_head(model, _head("fer", 96), check_encoder=False)
    calls.clear()
    res = embedder(crops)
    assert len(calls) == 2
    assert sorted(res.predictions) == ["fer", "pose"]  # the 96 px head needs its own forward
