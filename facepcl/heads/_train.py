"""Training heads: the loop, the tasks' losses and scores, epoch selection.

Training code: inference modules never import this.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import metrics
from ._spec import TaskHead

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "constant")
# Arrays up to this size are copied into memory once instead of read from the memory map every epoch.
IN_MEMORY_BYTES = 2 << 30


@dataclass
class HeadTrainConfig:
    """Optimisation settings of a head (and, when fine-tuning, of the encoder).

    Attributes:
        optimizer: "adam", "adamw" or "sgd" (momentum 0.9).
        lr: Head learning rate.
        weight_decay: Weight decay (AdamW: decoupled; torch's AdamW default is 0.01).
        schedule: "cosine" (annealed to 0 over ``epochs``, stepped per epoch) or "constant".
        epochs: Passes over the training data.
        batch_size: Samples (or pairs) per step.
        shuffle: Reshuffle the training data every epoch.
        seed: Seed for initialisation, shuffling and splits.
        encoder_lr: Encoder learning rate when fine-tuning (None: frozen).
        margin: Verification only: CosineEmbeddingLoss margin.
    """

    optimizer: str = "adam"
    lr: float = 1e-2
    weight_decay: float = 0.0
    schedule: str = "cosine"
    epochs: int = 300
    batch_size: int = 256
    shuffle: bool = True
    seed: int = 0
    encoder_lr: float | None = None
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"epochs ({self.epochs}), batch_size ({self.batch_size}) and lr ({self.lr}) must be "
                             "positive")


@dataclass
class FitResult:
    """Outcome of a training run.

    Attributes:
        best_epoch: 1-based epoch whose weights were kept.
        best_score: Its selection score (None when selecting the last epoch).
        history: Per epoch: ``{"epoch", "loss", "score", ...metrics}``.
        selection: "val" (a held-out split), "test" (the test set: the
            reference's practice, optimistic) or "last".
    """

    best_epoch: int
    best_score: float | None
    history: list[dict] = field(default_factory=list)
    selection: str = "last"


def task_loss(task: str, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The training loss of a task: cross-entropy, BCE-with-logits, or L1 (degrees)."""
    if task == "classification":
        return F.cross_entropy(out, target.long())
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(out, target.float())
    if task == "regression":
        return F.l1_loss(out, target.float())
    raise ValueError(f"no pointwise loss for task {task!r}")


def task_metrics(task: str, out: np.ndarray, target: np.ndarray, names: list[str],
                 threshold: float = 0.5) -> dict[str, float]:
    """Metrics of raw outputs, with a ``score`` entry where higher is better.

    Classification: accuracy. Multilabel: per-label F1 at sigmoid >= threshold
    and the mean. Regression: MAE per output (degrees for pose) and the mean;
    score = -mean MAE.
    """
    if task == "classification":
        acc = metrics.accuracy(out.argmax(1), target)
        return {"accuracy": acc, "score": acc}
    if task == "multilabel":
        prob = 1.0 / (1.0 + np.exp(-out.astype(np.float64)))
        f1 = metrics.multilabel_f1(prob >= threshold, target >= 0.5, names)
        return {**{f"f1_{k}": v for k, v in f1.items()}, "score": f1["mean"]}
    if task == "regression":
        if len(names) == 3 and tuple(names) == metrics.POSE_ANGLES:
            mae = metrics.pose_mae(out, target)
        else:
            per = np.abs(out.astype(np.float64) - target).mean(0)
            mae = {**{n: float(v) for n, v in zip(names, per, strict=True)}, "mean": float(per.mean())}
        return {**{f"mae_{k}": v for k, v in mae.items()}, "score": -mae["mean"]}
    raise ValueError(f"no pointwise metrics for task {task!r}")


def make_optimizer(groups: list[dict], cfg: HeadTrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def train_loop(modules: list[nn.Module], groups: list[dict], cfg: HeadTrainConfig,
               epoch_batches: Callable[[int], Iterable], step_loss: Callable[[object], torch.Tensor],
               score: Callable[[], dict[str, float]] | None, selection: str,
               progress: bool = False) -> FitResult:
    """Run ``cfg.epochs`` epochs and keep the weights of the selected epoch.

    Args:
        modules: Everything trained (their state is snapshotted for selection).
        groups: Optimizer parameter groups.
        cfg: Settings.
        epoch_batches: ``epoch -> iterable of batches``.
        step_loss: ``batch -> scalar loss``.
        score: Called after every epoch (modules in eval mode); returns
            metrics with a "score" (higher is better). None: keep the last epoch.
        selection: Label recorded in the result ("val", "test" or "last").
        progress: Log every epoch at INFO level (else every 10%).
    """
    opt = make_optimizer(groups, cfg)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs) if cfg.schedule == "cosine"
             else None)
    best: tuple[float, int, list[dict]] | None = None
    history = []
    every = 1 if progress else max(1, cfg.epochs // 10)
    for epoch in range(1, cfg.epochs + 1):
        for m in modules:
            m.train()
        total, count = 0.0, 0
        for batch in epoch_batches(epoch):
            loss = step_loss(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training diverged at epoch {epoch} (loss {loss.item()}); lower the "
                                         f"learning rate (lr={cfg.lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            count += 1
        if sched is not None:
            sched.step()
        row = {"epoch": epoch, "loss": total / max(count, 1)}
        if score is not None:
            for m in modules:
                m.eval()
            row.update(score())
            if best is None or row["score"] > best[0]:
                best = (row["score"], epoch, [copy.deepcopy(m.state_dict()) for m in modules])
        history.append(row)
        if epoch % every == 0 or epoch == cfg.epochs:
            log.info("epoch %d/%d %s", epoch, cfg.epochs,
                     " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
    for m in modules:
        m.eval()
    if best is None:
        return FitResult(cfg.epochs, None, history, "last")
    for m, state in zip(modules, best[2], strict=True):
        m.load_state_dict(state)
    return FitResult(best[1], best[0], history, selection)


def _as_tensor(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor | np.ndarray:
    """Small arrays go to the device once; large memory maps stay on disk and are read per batch."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=torch.float32)
    if x.nbytes <= IN_MEMORY_BYTES:
        return torch.as_tensor(np.array(x, dtype=np.float32), device=device)  # a copy: memory maps are read-only
    return x


def _rows(x: torch.Tensor | np.ndarray, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x[torch.as_tensor(idx, device=x.device)].to(device)
    order = np.argsort(idx)  # sorted reads are sequential on a memory map
    rows = np.empty((len(idx), x.shape[1]), np.float32)
    rows[order] = x[idx[order]]
    return torch.from_numpy(rows).to(device)


def _batches(n: int, batch_size: int, shuffle: bool, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Index batches covering all ``n`` samples once, a last batch of one folded into the one before it.

    A batch of one breaks BatchNorm in training mode; dropping it instead
    would skip the same sample every epoch when the order is not shuffled.
    """
    order = rng.permutation(n) if shuffle else np.arange(n)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    ends = [*starts[1:], n]
    for s, e in zip(starts, ends, strict=True):
        yield order[s:e]


def outputs(head: TaskHead, x: torch.Tensor | np.ndarray, device: torch.device, batch_size: int = 1024) -> np.ndarray:
    """Raw head outputs for every row of ``x`` (eval mode), ``(N, out_dim)`` float32."""
    head.eval()
    res = []
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            idx = np.arange(s, min(s + batch_size, len(x)))
            res.append(head(_rows(x, idx, device)).float().cpu().numpy())
    return np.concatenate(res) if res else np.zeros((0, head.spec.out_dim), np.float32)


def fit_features(head: TaskHead, x: np.ndarray, y: np.ndarray, cfg: HeadTrainConfig, *,
                 val: tuple[np.ndarray, np.ndarray] | None = None, selection: str = "val",
                 device: torch.device | str = "cpu", progress: bool = False,
                 rows: np.ndarray | None = None) -> FitResult:
    """Train a head on precomputed features.

    Args:
        head: The head (trained in place).
        x: ``(N, in_dim)`` features (a memory map is fine).
        y: ``(N,)`` class indices or ``(N, K)`` targets.
        cfg: Settings.
        val: ``(x_val, y_val)`` scored after every epoch to pick the epoch;
            None keeps the last epoch.
        selection: What ``val`` is, for the record: "val" or "test".
        device: Training device.
        progress: Log every epoch.
        rows: Train on these rows of ``x``/``y`` only (default all), so a
            large memory map is never copied to make a training subset.
    """
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    task, names = head.spec.task, head.spec.label_names
    head.to(device)
    rows = np.arange(len(x)) if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
    xt = _as_tensor(x, device)
    yt = torch.as_tensor(np.asarray(y), device=device)
    if len(rows) < 2:
        raise ValueError(f"need at least 2 training samples, got {len(rows)}")

    def step(idx: np.ndarray) -> torch.Tensor:
        idx = rows[idx]
        return task_loss(task, head(_rows(xt, idx, device)), yt[torch.as_tensor(idx, device=device)])

    score = None
    if val is not None:
        xv = _as_tensor(val[0], device)
        yv = np.asarray(val[1])

        def score() -> dict[str, float]:
            return task_metrics(task, outputs(head, xv, device), yv, names)

    return train_loop([head], [{"params": head.parameters()}], cfg,
                      lambda e: _batches(len(rows), cfg.batch_size, cfg.shuffle, rng), step, score,
                      selection if val is not None else "last", progress)


def pair_scores(head: TaskHead | None, x: torch.Tensor | np.ndarray, pairs: np.ndarray,
                device: torch.device) -> np.ndarray:
    """Cosine similarity of each pair, on head outputs (or on the raw features when ``head`` is None)."""
    if head is not None:
        emb = torch.as_tensor(outputs(head, x, device))
    else:
        emb = x.cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.array(x, dtype=np.float32))
    emb = F.normalize(emb.float(), dim=1)
    return (emb[pairs[:, 0]] * emb[pairs[:, 1]]).sum(1).numpy()


def fit_pairs(head: TaskHead, x: np.ndarray, pairs: np.ndarray, same: np.ndarray, cfg: HeadTrainConfig, *,
              val: tuple[np.ndarray, np.ndarray] | None = None, selection: str = "val",
              device: torch.device | str = "cpu", progress: bool = False) -> FitResult:
    """Train a verification head on labelled pairs with a cosine-embedding loss.

    Args:
        head: Verification head (its outputs are the embedding).
        x: ``(M, in_dim)`` features of the distinct images.
        pairs: ``(P, 2)`` training pairs (row indices into ``x``).
        same: ``(P,)`` bool labels.
        cfg: Settings (``cfg.margin`` is the loss margin).
        val: ``(val_pairs, val_same)`` scored after every epoch by the
            accuracy of the best threshold on them; None keeps the last epoch.
    """
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    head.to(device)
    xt = _as_tensor(x, device)
    target = torch.as_tensor(np.where(same, 1.0, -1.0), dtype=torch.float32, device=device)
    loss_fn = nn.CosineEmbeddingLoss(margin=cfg.margin)

    def step(idx: np.ndarray) -> torch.Tensor:
        p = pairs[idx]
        both = head(_rows(xt, np.concatenate([p[:, 0], p[:, 1]]), device))
        a, b = both[: len(idx)], both[len(idx):]
        return loss_fn(a, b, target[torch.as_tensor(idx, device=device)])

    score = None
    if val is not None:
        vp, vs = val

        def score() -> dict[str, float]:
            thr, acc = metrics.best_threshold(pair_scores(head, xt, vp, device), vs)
            return {"accuracy": acc, "threshold": thr, "score": acc}

    return train_loop([head], [{"params": head.parameters()}], cfg,
                      lambda e: _batches(len(pairs), cfg.batch_size, cfg.shuffle, rng), step, score,
                      selection if val is not None else "last", progress)

