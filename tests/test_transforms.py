"""facepcl.transforms: one pixels-to-input path shared by the pipeline, heads and training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import facepcl
from facepcl.config import PCLConfig, PreprocessConfig
from facepcl.model import PCLModel
from facepcl.preprocess import to_input
from facepcl.train import augment as A
from facepcl.train.config import load_config

# Non-trivial on purpose: BGR network order, a [-1, 1] value range, then mean and std.
ODD = {"color_order": "BGR", "value_range": [-1.0, 1.0], "mean": [0.1, -0.2, 0.3], "std": [0.5, 0.6, 0.7]}


def _crops(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, size, size, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def odd_model() -> PCLModel:
    torch.manual_seed(0)
    return PCLModel(PCLConfig(preprocess=PreprocessConfig(**ODD))).eval()


def test_transform_is_what_the_pipeline_feeds_the_encoder(odd_model):
    t = facepcl.transforms(odd_model)
    crop = _crops(1)[0]
    x = t(crop)
    assert x.shape == (3, 64, 64)
    assert x.dtype == torch.float32
    # by hand: RGB -> BGR, [0, 1] -> [-1, 1], then mean and std
    want = torch.from_numpy(crop).permute(2, 0, 1).float().flip(0) / 255 * 2 - 1
    want = (want - torch.tensor(ODD["mean"]).view(3, 1, 1)) / torch.tensor(ODD["std"]).view(3, 1, 1)
    torch.testing.assert_close(x, want, rtol=0, atol=1e-6)
    # every accepted form of the same crop gives the same input
    for same in (Image.fromarray(crop), torch.from_numpy(crop), torch.from_numpy(crop).permute(2, 0, 1),
                 torch.from_numpy(crop).permute(2, 0, 1).float() / 255):
        assert torch.equal(t(same), x)
    # the exact pipeline's features are the encoder's features of exactly this input, also for a crop
    # of another size (scaled to fit, as detect=False does)
    embedder = facepcl.FaceEmbedder(odd_model, detect=False, mode="exact")
    other = _crops(1, 90, seed=1)[0][:, :70]
    res = embedder([crop, other])
    with torch.no_grad():
        feats = odd_model.encoder(torch.stack([x, t(other)]))
    for name in ("face", "pose", "trunk"):
        np.testing.assert_array_equal(getattr(res, name), getattr(feats, name).numpy())
    # the batched path and the heads' path give the same values at the crop size
    crops = _crops(3, seed=2)
    batch = t.batch(crops)
    assert torch.equal(batch[1], t(crops[1]))
    assert torch.equal(to_input(list(crops), 64, "bilinear", odd_model.config.preprocess), batch)
    assert torch.equal(to_input(torch.from_numpy(crops), 64, "bilinear", odd_model.config.preprocess), batch)


def test_transform_options_and_errors(odd_model):
    embedder = facepcl.FaceEmbedder(odd_model, detect=False, crop_size=100)
    for source in (embedder, odd_model.config.preprocess.resized(100)):
        assert facepcl.transforms(source).size == 100
    assert facepcl.transforms(odd_model.config, crop_size=100).size == 100
    train = facepcl.transforms(odd_model, train=True)
    crop = _crops(1)[0]
    assert train.train
    assert "train=True" in repr(train)
    assert torch.equal(train(crop), facepcl.transforms(odd_model)(crop))
    with pytest.raises(TypeError, match="PCLModel, FaceEmbedder"):
        facepcl.transforms("pcl-demo")
    with pytest.raises(ValueError, match=r"uint8 \(B, 64, 64, 3\)"):
        facepcl.transforms(odd_model).batch(_crops(2, 32))
    with pytest.raises(ValueError, match="at least 16"):
        facepcl.transforms(odd_model, crop_size=8)


def _batch(n: int = 2, b: int = 2, m: int = 3, s: int = 64) -> dict[str, torch.Tensor]:
    return {"rec_frames": torch.from_numpy(_crops(n, s, seed=3)), "rec_noise": torch.zeros(n, 2, s, s, 3),
            "face_patches": torch.from_numpy(_crops(2 * n, s, seed=4)).view(n, 2, s, s, 3),
            "face_params": torch.zeros(n, 2, A.NUM_PARAMS),
            "pose_frames": torch.from_numpy(_crops(b, s, seed=5)), "pose_params": torch.zeros(b, 2 + m, A.NUM_PARAMS)}


def _no_augmentation(*extra: str):
    return load_config(None, ["data.root=x", "augment.jitter_p=0", "augment.gray_p=0", "augment.blur_p=0",
                              "augment.sobel_p=0", "batch.pose_negatives=3", *extra])


def test_training_batches_agree_with_served_inputs(odd_model):
    # Same crop -> same encoder input in training and at serving time, for a config with mean/std.
    cfg = _no_augmentation()
    cfg.export.preprocess = {**ODD, "crop_size": 64}
    batch = _batch()
    inputs = A.make_inputs(batch, cfg, torch.device("cpu"))
    served = facepcl.transforms(odd_model)
    frames, patches, pose = batch["rec_frames"].numpy(), batch["face_patches"].numpy(), batch["pose_frames"].numpy()
    n, b = len(frames), len(pose)
    flipped = frames[:, :, ::-1]
    torch.testing.assert_close(inputs["rec"]["noisy"], served.batch(np.concatenate([frames, flipped])),
                               rtol=0, atol=1e-6)
    views = np.concatenate([patches[:, 0], patches[:, 1]])  # all first views, then all second views
    torch.testing.assert_close(inputs["face"]["views"], served.batch(views), rtol=0, atol=1e-6)
    torch.testing.assert_close(inputs["pose"]["anchors"], served.batch(np.concatenate([pose, pose])),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(inputs["pose"]["negatives"], served.batch(np.repeat(pose[:, :, ::-1], 3, axis=0)),
                               rtol=0, atol=1e-6)
    # reconstruction targets stay RGB pixels in [0, 1]
    torch.testing.assert_close(inputs["rec"]["s"], torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)
    assert inputs["rec"]["s"].shape == (n, 3, 64, 64)
    assert inputs["pose"]["negatives"].shape[0] == 3 * b


def test_default_training_inputs_are_plain_pixels():
    # The default config has no mean/std: encoder inputs are the pixels / 255, as before.
    inputs = A.make_inputs(_batch(), _no_augmentation(), torch.device("cpu"))
    s = inputs["rec"]["s"]
    assert torch.equal(inputs["rec"]["noisy"], torch.cat([s, s.flip(-1)]))
    frames = _batch()["pose_frames"].permute(0, 3, 1, 2).float() / 255
    assert torch.equal(inputs["pose"]["anchors"], frames.repeat(2, 1, 1, 1))
