"""Training heads on features and fine-tuning the encoder: separable tasks are learnt, selection is right."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facepcl import PCLConfig, PCLModel
from facepcl.eval import demo
from facepcl.eval.datasets import ArrayImages, LabelledImages
from facepcl.heads import FineTuner, HeadSpec, HeadTrainConfig, TaskHead, fit_features, fit_pairs, task_metrics
from facepcl.heads._train import outputs, pair_scores


def _head(task, in_dim, out_dim, kind="linear", names=None):
    torch.manual_seed(0)
    names = names if names is not None else [str(i) for i in range(out_dim)]
    return TaskHead(HeadSpec(name="t", task=task, features=["trunk"], input_size=64, in_dim=in_dim,
                             out_dim=out_dim, kind=kind, label_names=names))


def _blobs(n, classes, dim, seed):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).normal(0, 1, (classes, dim))
    y = rng.integers(0, classes, n)
    return (centres[y] + rng.normal(0, 0.3, (n, dim))).astype(np.float32), y


def test_separable_classes_reach_high_accuracy_and_selection_keeps_best_epoch():
    x, y = _blobs(300, 4, 32, 0)
    xv, yv = _blobs(100, 4, 32, 1)
    xt, yt = _blobs(200, 4, 32, 2)
    head = _head("classification", 32, 4)
    cfg = HeadTrainConfig("adam", 1e-2, 0.0, "cosine", 15, 64)
    fit = fit_features(head, x, y, cfg, val=(xv, yv))
    scores = [h["score"] for h in fit.history]
    assert fit.best_epoch == int(np.argmax(scores)) + 1
    assert fit.best_score == max(scores)
    assert fit.selection == "val"
    # the kept weights are those of the best epoch: re-scoring the validation set gives its score
    assert task_metrics("classification", outputs(head, xv, "cpu"), yv, head.spec.label_names)["score"] == max(scores)
    assert task_metrics("classification", outputs(head, xt, "cpu"), yt, head.spec.label_names)["accuracy"] > 0.95


def test_no_validation_keeps_last_epoch():
    x, y = _blobs(50, 2, 8, 0)
    fit = fit_features(_head("classification", 8, 2), x, y, HeadTrainConfig(epochs=3, batch_size=16))
    assert fit.selection == "last"
    assert fit.best_epoch == 3
    assert fit.best_score is None
    assert len(fit.history) == 3


def test_pose_regression_bn_linear_learns_degrees():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (16, 3))
    x = rng.normal(0, 1, (400, 16)).astype(np.float32)
    y = (x @ w * 20).astype(np.float32)  # angles of tens of degrees
    head = _head("regression", 16, 3, kind="bn-linear", names=["yaw", "pitch", "roll"])
    fit_features(head, x[:300], y[:300], HeadTrainConfig("adamw", 1e-1, 0.0, "cosine", 40, 50))
    m = task_metrics("regression", outputs(head, x[300:], "cpu"), y[300:], ["yaw", "pitch", "roll"])
    assert set(m) == {"mae_yaw", "mae_pitch", "mae_roll", "mae_mean", "score"}
    baseline = np.abs(y[300:] - np.median(y[:300], 0)).mean()  # predicting a constant: about 60 degrees
    assert m["mae_mean"] < 0.05 * baseline


def test_multilabel_reaches_high_f1():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (400, 5)).astype(np.float32)
    x = np.concatenate([y * 2 - 1, rng.normal(0, 1, (400, 11))], 1).astype(np.float32) + rng.normal(0, 0.2, (400, 16))
    head = _head("multilabel", 16, 5, kind="bn-linear")
    fit_features(head, x[:300], y[:300], HeadTrainConfig("adam", 1e-2, 0.0, "cosine", 30, 32))
    m = task_metrics("multilabel", outputs(head, x[300:], "cpu"), y[300:], head.spec.label_names)
    assert m["f1_mean"] > 0.95


def test_verification_head_separates_identities():
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(40), 2)
    centres = rng.normal(0, 1, (40, 24))
    x = (centres[ids] + rng.normal(0, 0.3, (80, 24)) + rng.normal(0, 3, (1, 24))).astype(np.float32)
    pairs = np.array([[2 * i, 2 * i + 1] for i in range(40)] + [[2 * i, 2 * ((i + 1) % 40) + 1] for i in range(40)])
    same = np.r_[np.ones(40, bool), np.zeros(40, bool)]
    head = _head("verification", 24, 16, kind="bn-linear", names=[])
    fit = fit_pairs(head, x, pairs[::2], same[::2], HeadTrainConfig("adam", 1e-2, 0.0, "cosine", 30, 16),
                    val=(pairs[1::2], same[1::2]))
    s = pair_scores(head, x, pairs[1::2], torch.device("cpu"))
    assert s[same[1::2]].min() > s[~same[1::2]].max()  # held-out pairs separated
    assert 1 <= fit.best_epoch <= 30


def _tiny_images(n_per_class=6, classes=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    imgs = np.stack([demo.class_image(int(c), classes, size, rng) for c in labels])
    return LabelledImages("tiny", ArrayImages(imgs, "RGB", "tiny"), labels, "classification",
                          [str(c) for c in range(classes)])


def test_finetuner_uses_separate_learning_rates():
    torch.manual_seed(3)
    model = PCLModel(PCLConfig())
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    data = _tiny_images(n_per_class=2, size=16)
    head = TaskHead(HeadSpec(name="t", task="classification", features=["trunk"], input_size=16, in_dim=128,
                             out_dim=3, label_names=data.label_names))
    head_before = head.net.fc.weight.detach().clone()
    # encoder lr 0: the encoder must not move while the head does
    FineTuner(model, head, HeadTrainConfig("adam", 1e-3, 0.0, "constant", 1, 3, encoder_lr=0.0), device="cpu").fit(data)
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    assert not torch.equal(head_before, head.net.fc.weight)
    # with an encoder lr both move, and the model is left in eval mode
    tuner = FineTuner(model, head, HeadTrainConfig("adam", 1e-3, 0.0, "constant", 2, 3, encoder_lr=1e-4), device="cpu")
    fit = tuner.fit(data, val=data)
    assert any(not torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    assert not model.encoder.training
    assert fit.selection == "val"
    assert tuner.predict(data).shape == (6, 3)


def test_finetuner_flip_negates_yaw_and_roll():
    model = PCLModel(PCLConfig())
    imgs = np.zeros((2, 8, 8, 3), np.uint8)
    imgs[:, :, :4] = 255  # left half bright
    data = LabelledImages("p", ArrayImages(imgs, "RGB", "p"), np.array([[30, 10, -5], [30, 10, -5]], np.float32),
                          "regression", ["yaw", "pitch", "roll"])
    head = TaskHead(HeadSpec(name="p", task="regression", features=["trunk"], input_size=16, in_dim=128,
                             out_dim=3, kind="bn-linear", label_names=["yaw", "pitch", "roll"]))
    tuner = FineTuner(model, head, HeadTrainConfig(epochs=1, batch_size=2), augment="flip", device="cpu")
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(20):
        batch, y = tuner._batch(data, np.array([0, 1]), rng)
        for img, target in zip(batch, y.tolist(), strict=True):
            flipped = img[0, 0, 0] == 0
            assert target == ([-30, 10, 5] if flipped else [30, 10, -5])
            seen.add(bool(flipped))
    assert seen == {True, False}


def test_finetuner_trains_verification_on_pairs():
    torch.manual_seed(5)
    model = PCLModel(PCLConfig())
    # four identities, three images each (colour-mosaic "faces")
    data = _tiny_images(n_per_class=3, classes=4, size=16, seed=1)
    ids = np.asarray(data.labels)
    pairs = np.array([[i, j] for i in range(len(ids)) for j in range(i + 1, len(ids))])
    same = ids[pairs[:, 0]] == ids[pairs[:, 1]]
    head = TaskHead(HeadSpec(name="v", task="verification", features=["trunk"], input_size=16, in_dim=128,
                             out_dim=8, kind="bn-linear"))
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    tuner = FineTuner(model, head, HeadTrainConfig("adam", 1e-3, 0.0, "constant", 2, 16, encoder_lr=1e-4), device="cpu")
    with pytest.raises(ValueError, match="fit_pairs"):
        tuner.fit(data)
    fit = tuner.fit_pairs(data.images, pairs, same, val=(pairs, same))
    assert len(fit.history) == 2
    assert fit.selection == "val"
    assert 0.5 <= fit.history[-1]["accuracy"] <= 1.0
    assert any(not torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    scores = tuner.pair_scores(data.images, pairs)
    assert scores.shape == (len(pairs),)
    assert np.all(np.abs(scores) <= 1 + 1e-5)
    # the scores are the cosine of the head outputs of each image
    emb = tuner.embed_images(data.images, np.arange(len(ids)))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    np.testing.assert_allclose(scores, (emb[pairs[:, 0]] * emb[pairs[:, 1]]).sum(1), atol=1e-5)
    with pytest.raises(ValueError, match="verification"):
        FineTuner(model, TaskHead(HeadSpec(name="c", task="classification", features=["trunk"], input_size=16,
                                           in_dim=128, out_dim=4)), HeadTrainConfig(), device="cpu").fit_pairs(
            data.images, pairs, same)


def test_a_last_batch_of_one_is_folded_into_the_one_before():
    from facepcl.heads._train import _batches

    rng = np.random.default_rng(0)
    unshuffled = list(_batches(9, 4, False, rng))
    assert [b.tolist() for b in unshuffled] == [[0, 1, 2, 3], [4, 5, 6, 7, 8]]  # sample 8 is trained on
    shuffled = list(_batches(9, 4, True, rng))
    assert [len(b) for b in shuffled] == [4, 5]
    assert sorted(np.concatenate(shuffled).tolist()) == list(range(9))
    assert [len(b) for b in _batches(10, 4, False, rng)] == [4, 4, 2]
    assert [len(b) for b in _batches(1, 4, False, rng)] == [1]  # nothing to fold into
    assert [len(b) for b in _batches(5, 1, False, rng)] == [1, 1, 1, 2]


def test_head_training_has_one_config_name():
    import facepcl.heads as heads
    from facepcl.train.config import TrainConfig as PretrainConfig

    assert heads.HeadTrainConfig is HeadTrainConfig
    assert HeadTrainConfig is not PretrainConfig
    with pytest.raises(AttributeError, match="TrainConfig"):
        heads.TrainConfig  # noqa: B018
