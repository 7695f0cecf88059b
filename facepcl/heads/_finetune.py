"""Full fine-tuning: the encoder and a head trained together, each with its own learning rate.

Images are streamed (read, resized to the task's input size, encoded) every
epoch, since the features change as the encoder trains. Training code:
inference modules never import this.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._utils.device import resolve_device
from ..model import PCLModel
from ..preprocess import to_input
from . import metrics
from ._inputs import select_features
from ._spec import TaskHead
from ._train import FitResult, HeadTrainConfig, _batches, task_loss, task_metrics, train_loop

log = logging.getLogger(__name__)

AUGMENTS = ("none", "flip")


class FineTuner:
    """Train ``model.encoder`` and a head end to end on labelled images.

    Args:
        model: The model whose encoder is fine-tuned (in place).
        head: The head (its spec gives the task, features and input size).
        config: Optimisation settings; ``config.lr`` is the head's learning
            rate, ``config.encoder_lr`` the encoder's (default lr / 10).
        augment: "none", or "flip" (random horizontal flip; for pose
            regression with [yaw, pitch, roll] outputs, yaw and roll change sign).
        device: Training device (None: CUDA if available, else CPU).

    Example:
        >>> tuner = FineTuner(model, head, HeadTrainConfig(lr=1e-3, encoder_lr=1e-4, epochs=10))
        >>> result = tuner.fit(train_set, val=val_set)

    Verification heads train on pairs instead: :meth:`fit_pairs`.
    """

    def __init__(self, model: PCLModel, head: TaskHead, config: HeadTrainConfig, *, augment: str = "none",
                 device: str | torch.device | None = None) -> None:
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
        self.model, self.head, self.config, self.augment = model, head, config, augment
        self.device = resolve_device(device)
        self.encoder_lr = config.encoder_lr if config.encoder_lr is not None else config.lr / 10

    def _encode(self, images: list[np.ndarray]) -> torch.Tensor:
        spec = self.head.spec
        x = to_input(images, spec.input_size, spec.interpolation, self.model.config.preprocess, self.device)
        return select_features(self.model.encoder(x), spec.features)

    def _read(self, images, idx, rng: np.random.Generator | None) -> tuple[list[np.ndarray], np.ndarray]:
        """Images ``idx``, each flipped at random with ``augment="flip"`` and an ``rng``; and which were flipped."""
        imgs = [images.read(int(i)) for i in idx]
        flip = np.zeros(len(imgs), bool)
        if self.augment == "flip" and rng is not None:
            flip = rng.random(len(imgs)) < 0.5
            imgs = [np.ascontiguousarray(im[:, ::-1]) if f else im for im, f in zip(imgs, flip, strict=True)]
        return imgs, flip

    def _batch(self, data, idx: np.ndarray, rng: np.random.Generator) -> tuple[list[np.ndarray], torch.Tensor]:
        y = torch.as_tensor(np.asarray(data.labels[idx]), device=self.device)
        imgs, flip = self._read(data.images, idx, rng)
        if self.augment == "flip" and self.head.spec.task == "regression":
            sign = torch.ones(y.shape[1], device=self.device)
            if list(self.head.spec.label_names) == ["yaw", "pitch", "roll"]:
                sign[[0, 2]] = -1.0
            else:
                raise ValueError("flip augmentation of regression targets is defined only for "
                                 "[yaw, pitch, roll]; use augment='none'")
            y = y.float()
            y[torch.as_tensor(flip, device=self.device)] *= sign
        return imgs, y

    def predict(self, data, batch_size: int | None = None) -> np.ndarray:
        """Raw head outputs ``(N, out_dim)`` for every image of ``data`` (eval mode)."""
        return self.embed_images(data.images, np.arange(len(data)), batch_size)

    def embed_images(self, images, index: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Head outputs ``(len(index), out_dim)`` of images ``index`` of ``images`` (eval mode, no augmentation)."""
        bs = batch_size or self.config.batch_size
        self.model.encoder.eval()
        self.head.eval()
        out = [np.zeros((0, self.head.spec.out_dim), np.float32)]
        with torch.no_grad():
            for s in range(0, len(index), bs):
                imgs, _ = self._read(images, index[s:s + bs], None)
                out.append(self.head(self._encode(imgs)).float().cpu().numpy())
        return np.concatenate(out)

    def pair_scores(self, images, pairs: np.ndarray) -> np.ndarray:
        """Cosine similarity ``(P,)`` of the head outputs of each pair ``(P, 2)`` of image indices."""
        used = np.unique(pairs)
        emb = torch.from_numpy(self.embed_images(images, used))
        emb = F.normalize(emb, dim=1)
        at = np.searchsorted(used, pairs)
        return (emb[at[:, 0]] * emb[at[:, 1]]).sum(1).numpy()

    def _start(self) -> np.random.Generator:
        """Seed, move encoder and head to the device; the batches' random generator."""
        torch.manual_seed(self.config.seed)
        self.model.encoder.to(self.device)
        self.head.to(self.device)
        return np.random.default_rng(self.config.seed)

    def _train(self, batches, step, score, selection: str, progress: bool) -> FitResult:
        """Encoder and head together, each with its own learning rate; the model is left in eval mode."""
        groups = [{"params": self.model.encoder.parameters(), "lr": self.encoder_lr},
                  {"params": self.head.parameters(), "lr": self.config.lr}]
        result = train_loop([self.model.encoder, self.head], groups, self.config, batches, step, score, selection,
                            progress)
        self.model.eval()
        return result

    def fit_pairs(self, images, pairs: np.ndarray, same: np.ndarray, *,
                  val: tuple[np.ndarray, np.ndarray] | None = None, selection: str = "val",
                  progress: bool = False) -> FitResult:
        """Fine-tune a verification head and the encoder on labelled pairs (cosine-embedding loss).

        Args:
            images: The distinct images (:class:`~facepcl.eval.datasets.ImageSource`).
            pairs: ``(P, 2)`` training pairs (indices into ``images``).
            same: ``(P,)`` bool, True for same-identity pairs.
            val: ``(val_pairs, val_same)`` scored after every epoch by the
                accuracy of the best threshold on them; None keeps the last epoch.
            selection: What ``val`` is, for the record.
            progress: Log every epoch.
        """
        if self.head.spec.task != "verification":
            raise ValueError(f"fit_pairs trains verification heads; this head is {self.head.spec.task}")
        cfg = self.config
        rng = self._start()
        target = torch.as_tensor(np.where(same, 1.0, -1.0), dtype=torch.float32, device=self.device)
        loss_fn = nn.CosineEmbeddingLoss(margin=cfg.margin)

        def batches(epoch: int):
            order = rng.permutation(len(pairs)) if cfg.shuffle else np.arange(len(pairs))
            for s in range(0, len(order), cfg.batch_size):
                idx = order[s : s + cfg.batch_size]
                # Each distinct image is read and encoded once per batch, whichever pairs share it.
                used, at = np.unique(pairs[idx], return_inverse=True)
                yield self._read(images, used, rng)[0], at.reshape(-1, 2), idx

        def step(batch) -> torch.Tensor:
            imgs, at, idx = batch
            emb = self.head(self._encode(imgs))
            at = torch.as_tensor(at, device=self.device)
            return loss_fn(emb[at[:, 0]], emb[at[:, 1]], target[torch.as_tensor(idx, device=self.device)])

        score = None
        if val is not None:
            vp, vs = val

            def score() -> dict[str, float]:
                thr, acc = metrics.best_threshold(self.pair_scores(images, vp), vs)
                return {"accuracy": acc, "threshold": thr, "score": acc}

        return self._train(batches, step, score, selection if val is not None else "last", progress)

    def fit(self, train, val=None, *, selection: str = "val", progress: bool = False) -> FitResult:
        """Fine-tune on ``train`` (a :class:`~facepcl.eval.datasets.LabelledImages`).

        Args:
            train: Training images and labels.
            val: Scored after every epoch to keep the best epoch (None: last epoch).
            selection: What ``val`` is, for the record ("val" or "test").
            progress: Log every epoch.
        """
        if self.head.spec.task == "verification":
            raise ValueError("a verification head trains on pairs: use fit_pairs")
        cfg = self.config
        rng = self._start()
        task = self.head.spec.task

        def batches(epoch: int):
            for idx in _batches(len(train), cfg.batch_size, cfg.shuffle, rng):  # a last batch of one is folded in
                yield self._batch(train, idx, rng)

        def step(batch) -> torch.Tensor:
            imgs, y = batch
            return task_loss(task, self.head(self._encode(imgs)), y)

        score = None
        if val is not None:
            def score() -> dict[str, float]:
                return task_metrics(task, self.predict(val), np.asarray(val.labels), self.head.spec.label_names)

        return self._train(batches, step, score, selection if val is not None else "last", progress)
