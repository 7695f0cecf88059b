"""Heads loaded with the model come back from facepcl.embed as per-face predictions."""

from __future__ import annotations

import numpy as np
import torch

import facepcl
from facepcl.config import feature_dim
from facepcl.heads import HeadSpec, TaskHead, predict_crops, save_head


def _head(name: str, task: str, size: int, out_dim: int, labels: list[str]) -> TaskHead:
    torch.manual_seed(len(name) + size)
    spec = HeadSpec(name=name, task=task, features=["trunk"], input_size=size, in_dim=feature_dim(size),
                    out_dim=out_dim, label_names=labels, detect=True)
    head = TaskHead(spec)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.05)
    return head


def test_load_with_head_and_embed_returns_predictions(random_model_dir, tmp_path, photo_paths):
    folder = tmp_path / "model"
    folder.mkdir()
    for f in random_model_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    emotions = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
    save_head(_head("fer", "classification", 96, 7, emotions), folder)
    save_head(_head("pose", "regression", 64, 3, ["yaw", "pitch", "roll"]), folder)

    model = facepcl.load(folder, head=["fer", "pose"], device="cpu")
    images = [photo_paths["multi_face.jpg"], photo_paths["astronaut.png"]]
    # exact: the float32 path, so that predictions can be compared with predict_crops' to 1e-5 (the fast default
    # runs the encoder in bf16 on CPUs that compute it natively)
    res = facepcl.FaceEmbedder(model, return_crops=True, mode="exact")(images)
    assert len(res) == 6
    assert sorted(res.predictions) == ["fer", "pose"]
    fer, pose = res.predictions["fer"], res.predictions["pose"]
    assert fer.scores.shape == (6, 7)
    assert np.allclose(fer.scores.sum(1), 1, atol=1e-5)
    assert set(fer.labels) <= set(emotions)
    assert pose.scores.shape == (6, 3)

    # The 64 px head sees exactly the embedder's crops; the 96 px head sees the faces aligned at 96 px
    # from the original images (not the 64 px crops upscaled).
    direct = predict_crops(model, res.crops, names=["pose"])["pose"]
    np.testing.assert_allclose(pose.scores, direct.scores, atol=1e-5)
    big = facepcl.FaceEmbedder(model, crop_size=96, return_crops=True, mode="exact")(images)
    np.testing.assert_allclose(fer.scores, predict_crops(model, big.crops, names=["fer"])["fer"].scores, atol=1e-5)
    upscaled = predict_crops(model, res.crops, names=["fer"])["fer"].scores
    assert np.abs(upscaled - fer.scores).max() > 1e-4

    # Predictions follow row selection and per-image splitting.
    second = res.for_image(1)
    assert len(second) == 1
    assert np.array_equal(second.predictions["fer"].scores, fer.scores[5:6])
    per = res.per_image()
    assert [len(r.predictions["pose"].scores) for r in per] == [5, 1]
    joined = facepcl.EmbeddingResult.concatenate(per)
    np.testing.assert_array_equal(joined.predictions["fer"].labels, fer.labels)
