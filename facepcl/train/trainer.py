"""The training loop: three optimizer steps per iteration, DWA per epoch, cosine LR per epoch.

One iteration (the reference's order; each step has its own batch, forward,
backward and Adam step):

(a) reconstruction + orthogonality on ``batch.rec`` frames;
(b) face contrastive on ``batch.face`` frames, weighted by lambda_face;
(c) pose contrastive on ``batch.pose`` frames with ``M`` flipped negatives
    each, weighted by lambda_pose.

An epoch is ``samples_per_epoch // batch.rec`` iterations; after it the DWA
history gets the epoch's mean unweighted face and pose losses and the cosine
schedule steps.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._utils.constants import COMPONENTS as _COMPONENTS
from ..config import PCLConfig
from ..model import PCLModel
from ..runtime._accel import native_bf16
from . import distributed as D
from .augment import make_inputs
from .checkpoint import CheckpointDir, export_model, load_checkpoint, lock_output, rng_state, set_rng_state
from .config import RunConfig, save_resolved
from .data import PCLFrames, StepSampler, build_loader, build_source
from .dwa import DynamicWeightAverage
from .logs import MetricsLog, Progress
from .losses.reconstruction import TERMS
from .objective import PCLObjective
from .verdict import LOSSES, report, trends

log = logging.getLogger("facepcl.train")
_MIX_TAG = 11  # separates the loss-mixing generators from the data ones
COMPONENTS = list(_COMPONENTS)  # a list, as config.components holds them


def resolve_precision(name: str, device: torch.device) -> str:
    """Turn ``precision`` ("auto", "fp32", "bf16", "fp16") into the one used on ``device``."""
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if device.type == "cpu" and native_bf16(device) else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 is for CUDA (it needs fp16 kernels and a grad scaler); on {device.type} "
                         "use precision=bf16 or precision=fp32")
    if name == "bf16" and device.type == "cpu" and not native_bf16(device):
        log.warning("precision bf16 on a CPU without native bf16: it runs, emulated and slowly; "
                    "precision=fp32 is faster here")
    return name


def build_model(cfg: RunConfig) -> PCLModel:
    """The model to train: random (seeded by the caller) or loaded from ``model.init``."""
    if cfg.model.init:
        from ..hub import load

        model = load(cfg.model.init, components="all", device="cpu")
        have = model.config
        want = (cfg.data.image_size, cfg.model.projection_hidden_dim, cfg.model.projection_dim, cfg.model.decoder_dim)
        got = (have.input_size, have.projection_hidden_dim, have.projection_dim, have.decoder_dim)
        if want != got or have.components != COMPONENTS:
            raise ValueError(f"model.init {cfg.model.init}: holds components {have.components} with (input_size, "
                             f"projection_hidden_dim, projection_dim, decoder_dim) = {got}; this run needs all of "
                             f"{COMPONENTS} and {want}: set the model.* keys to match it")
        if cfg.export.preprocess is None:
            # The fine-tuned model keeps the preprocessing its weights were made for.
            cfg.export.preprocess = dataclasses.asdict(have.preprocess)
        model.train()
        return model
    return PCLModel(PCLConfig(input_size=cfg.data.image_size, components=COMPONENTS,
                              projection_hidden_dim=cfg.model.projection_hidden_dim,
                              projection_dim=cfg.model.projection_dim, decoder_dim=cfg.model.decoder_dim))


def mixing_rng(seed: int, stage: int, epoch: int, iteration: int) -> np.random.Generator:
    """The generator of the Beta mixing of one step: the same on every rank."""
    return np.random.default_rng(np.random.SeedSequence([seed, _MIX_TAG, stage, epoch, iteration]))


class Trainer:
    """PCL pretraining of one process (of possibly many under torchrun).

    Args:
        cfg: The resolved run config.
        env: This process's place (see :func:`facepcl.train.distributed.init_distributed`).
    """

    def __init__(self, cfg: RunConfig, env: D.DistEnv) -> None:
        self.cfg, self.env = cfg, env
        self.device = env.device
        self.out = Path(cfg.output_dir).expanduser()
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if cfg.train.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # the shapes never change during a run
        keep = cfg.train.retain_cpu_memory
        if keep is True or (keep == "auto" and self.device.type == "cpu"):
            from ._malloc import retain_freed_memory

            retain_freed_memory()
        self.precision = resolve_precision(cfg.precision, self.device)
        cl = cfg.train.channels_last
        # channels_last helps the convolutions on CUDA and on oneDNN CPUs alike (the decoder in fp32, encoder
        # and decoder in bf16 on AVX512-BF16).
        self.channels_last = True if cl == "auto" else bool(cl)

        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        model = build_model(cfg)
        gather = env.distributed and cfg.loss.gather_distributed
        if env.distributed and not cfg.loss.gather_distributed:
            log.warning("loss.gather_distributed=false: each process uses only its own negatives, so the "
                        "objective changes with the number of processes")
        if env.distributed and cfg.train.sync_batchnorm:
            D.convert_batchnorm(model)
        elif env.distributed:
            log.warning("train.sync_batchnorm=false: BatchNorm statistics are per process")
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        model.train()
        self.model = model
        self.objective = PCLObjective(model, cfg, gather_distributed=gather, precision=self.precision,
                                      device_type=self.device.type)
        self.runner: torch.nn.Module = D.wrap_ddp(self.objective, self.device) if env.distributed else self.objective
        o = cfg.optim
        # The fused kernel updates all tensors in one pass (same algorithm; faster on CPU and CUDA).
        fused = {"fused": True} if self.device.type in ("cpu", "cuda") else {}
        self.optimizer = torch.optim.Adam(model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                          weight_decay=o.weight_decay, **fused)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=o.cosine_epochs or cfg.train.epochs, eta_min=o.min_lr)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.dwa = DynamicWeightAverage(2, cfg.dwa.temperature, cfg.dwa.start_epoch)
        self.epoch, self.iteration, self.global_step = 1, 0, 0
        self.epoch_sums = [0.0, 0.0, 0]  # face, pose (unweighted, global means), iterations
        self.checkpoints = CheckpointDir(self.out / "checkpoints", cfg.checkpoint.keep_last)
        self.iters_per_epoch = 1
        self._resumed_from: Path | None = None
        self.history: dict[str, list[float]] = {k: [] for k in LOSSES}  # for log.verdict_window
        self.passed: bool | None = None  # the verdict, when log.verdict_window asks for one

    # ----------------------------------------------------------------- state
    @property
    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "iteration": self.iteration, "global_step": self.global_step}

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs."""
        return {
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "dwa": self.dwa.state_dict(),
            "epoch_sums": list(self.epoch_sums),
            # Which parameters hold a (zeroed) gradient: with optim.step_unused, Adam steps exactly those.
            "has_grad": [p.grad is not None for p in self.model.parameters()],
            "position": self.position,
            "rng": rng_state(),
            "world_size": self.env.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.dwa.load_state_dict(state["dwa"])
        self.epoch_sums = list(state["epoch_sums"])
        for p, has in zip(self.model.parameters(), state["has_grad"], strict=True):
            p.grad = torch.zeros_like(p) if has else None
        pos = state["position"]
        self.epoch, self.iteration, self.global_step = pos["epoch"], pos["iteration"], pos["global_step"]
        set_rng_state(state["rng"])

    def _maybe_resume(self) -> None:
        mode = self.cfg.checkpoint.resume
        if mode == "never":
            if self.checkpoints.latest() is not None:
                raise ValueError(f"{self.checkpoints.folder} already holds checkpoints and checkpoint.resume=never: "
                                 "pick a new output_dir, or set checkpoint.resume=auto to continue that run")
            return
        if mode == "auto":
            found = self.checkpoints.load_latest()
            if found is None:
                return
            path, state = found
        else:
            path = Path(mode).expanduser()
            state = load_checkpoint(path)
        self._warn_config_changes(state["config"], path)
        self.load_state_dict(state)
        self._resumed_from = path
        log.info("resumed from %s at epoch %d, iteration %d (step %d)", path, self.epoch, self.iteration,
                 self.global_step)

    def _warn_config_changes(self, saved: dict[str, Any], path: Path) -> None:
        now = self.cfg.to_dict()
        diffs = [k for k, a, b in _flat_diff(saved, now) if not k.startswith(("log.", "checkpoint.", "export."))
                 and k not in ("train.epochs", "train.max_steps", "data.num_workers", "data.prefetch_factor",
                               "output_dir", "train.threads")]
        if diffs:
            log.warning("resuming from %s with a different config in %s: the result will differ from an "
                        "uninterrupted run", path, ", ".join(diffs))

    # ------------------------------------------------------------------ step
    def _optimize(self, stage: str, weight: float = 1.0, **inputs) -> dict[str, torch.Tensor]:
        out = self.runner(stage, **inputs)
        loss = out["loss"] * weight if weight != 1.0 else out["loss"]
        # The reference's torch 1.7 zeroes gradients instead of dropping them (optim.step_unused).
        self.optimizer.zero_grad(set_to_none=not self.cfg.optim.step_unused)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return out

    def train_step(self, batch: dict[str, torch.Tensor], keep_images: int = 0) -> dict[str, Any]:
        """One iteration (three optimizer steps). Returns the metrics (global means) and maybe images."""
        cfg = self.cfg
        w_face, w_pose = self.dwa.weights(self.epoch) if cfg.dwa.enabled else (1.0, 1.0)
        lr = self.optimizer.param_groups[0]["lr"]
        inputs = make_inputs(batch, cfg, self.device, self.channels_last)
        a = self._optimize("rec", **inputs["rec"], keep_images=keep_images)
        views = inputs["face"]["views"]
        face_mix = self.objective.face_loss.draw(views.shape[0], mixing_rng(cfg.seed, 1, self.epoch, self.iteration))
        b = self._optimize("face", w_face, views=views, mixing=face_mix)
        anchors = inputs["pose"]["anchors"]
        pose_mix = self.objective.pose_loss.draw(anchors.shape[0] // 2, cfg.batch.pose_negatives,
                                                 mixing_rng(cfg.seed, 2, self.epoch, self.iteration))
        c = self._optimize("pose", w_pose, **inputs["pose"], mixing=pose_mix)

        values = torch.cat([a["rec"].view(1), a["rec_terms"], a["orth"].view(1), b["face"].view(1),
                            b["face_acc"].view(1), c["pose"].view(1), c["pose_acc"].view(1)]).float()
        values = D.all_reduce_mean(values).tolist()
        rec, t0, t1, t2, t3, orth, face, face_acc, pose, pose_acc = values
        total = rec + (orth if cfg.loss.orthogonality else 0.0) + w_face * face + w_pose * pose
        metrics = {"loss": total, "rec": rec, **{f"rec_{k}": v for k, v in zip(TERMS, (t0, t1, t2, t3), strict=True)},
                   "orth": orth, "face": face, "pose": pose, "face_acc": face_acc, "pose_acc": pose_acc,
                   "w_face": w_face, "w_pose": w_pose, "lr": lr}
        if not all(np.isfinite(v) for v in metrics.values()):
            raise FloatingPointError(f"non-finite loss at epoch {self.epoch}, iteration {self.iteration}: {metrics}; "
                                     "lower optim.lr, or use precision=fp32 to rule out overflow")
        return {"metrics": metrics, "images": a.get("images")}

    # ------------------------------------------------------------------- run
    def fit(self) -> Path | None:
        """Train until ``train.epochs`` (or ``train.max_steps``); returns the export folder (rank 0)."""
        cfg, env = self.cfg, self.env
        source = build_source(cfg)
        _check_face_batch(cfg, len(source))
        samples = cfg.data.samples_per_epoch or len(source)
        self.iters_per_epoch = max(1, samples // cfg.batch.rec)
        # One training per output_dir: rank 0 holds its lock until the run ends (the OS drops it if it dies).
        held = lock_output(self.out) if env.is_main else None
        try:
            return self._fit(source, samples)
        finally:
            if held is not None:
                held.release()

    def _fit(self, source, samples: int) -> Path | None:
        cfg, env = self.cfg, self.env
        self._maybe_resume()
        total = cfg.train.epochs * self.iters_per_epoch
        if cfg.train.max_steps is not None:
            total = min(total, cfg.train.max_steps)
        if env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_resolved(cfg, self.out / "config.yaml")
            log.info("%d items, %d iterations per epoch, %d iterations to run (of %d), precision %s, "
                     "%d process(es), device %s", len(source), self.iters_per_epoch,
                     max(0, total - self.global_step), total, self.precision, env.world_size, self.device)
        steps = max(0, total - self.global_step)
        metrics_log = MetricsLog(self.out, enabled=env.is_main, tensorboard=cfg.log.tensorboard,
                                 resume_step=self.global_step if self._resumed_from else None)
        progress = Progress(total, self.global_step, enabled=env.is_main, bar=cfg.log.progress)
        dataset = PCLFrames(source, cfg)
        sampler = StepSampler(len(source), (cfg.batch.rec, cfg.batch.face, cfg.batch.pose), self.iters_per_epoch,
                              cfg.seed, env.world_size, env.rank, (self.epoch, self.iteration), steps)
        saved_at = self.global_step if self._resumed_from else -1
        try:
            for batch in build_loader(dataset, sampler, cfg, self.device):
                saved_at = self._iteration(batch, metrics_log, progress, saved_at)
        finally:
            progress.close()
            metrics_log.close()
        if saved_at != self.global_step:
            self._save()
        if cfg.log.verdict_window:
            items = trends(self.history, cfg.log.verdict_window, cfg.log.verdict_min_drop)
            self.passed = all(t.falls for t in items)
            if env.is_main:
                print(report(items, cfg.log.verdict_window), flush=True)
        exported = None
        if cfg.export.enabled and env.is_main:
            target = Path(cfg.export.dir).expanduser() if cfg.export.dir else self.out / "model"
            exported = export_model(self.model, target, cfg.to_dict(), self.position)
            log.info("exported the model to %s (facepcl.load reads it)", exported)
        D.barrier()
        return exported

    def _iteration(self, batch, metrics_log: MetricsLog, progress: Progress, saved_at: int) -> int:
        cfg = self.cfg
        t0, c0 = time.perf_counter(), time.process_time()
        step = self.global_step + 1
        every_img = cfg.log.image_every_steps
        keep = 2 if every_img and step % every_img == 0 and self.env.is_main else 0
        result = self.train_step(batch, keep_images=keep)
        m = result["metrics"]
        self.epoch_sums[0] += m["face"]
        self.epoch_sums[1] += m["pose"]
        self.epoch_sums[2] += 1
        if cfg.log.verdict_window:
            for k in LOSSES:
                self.history[k].append(m[k])
        row = {"step": step, "epoch": self.epoch, "iteration": self.iteration, **m,
               "time_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
        self.global_step = step
        self.iteration += 1
        epoch_done = self.iteration == self.iters_per_epoch
        if epoch_done:
            n = self.epoch_sums[2]
            self.dwa.record(self.epoch, [self.epoch_sums[0] / n, self.epoch_sums[1] / n])
            self.scheduler.step()
            self.epoch, self.iteration, self.epoch_sums = self.epoch + 1, 0, [0.0, 0.0, 0]
        if step % cfg.log.every_steps == 0:
            metrics_log.write(row)
        if result["images"] is not None:
            metrics_log.image(step, result["images"])
        progress.update({"loss": m["loss"], "lr": m["lr"]})
        if cfg.log.print_every_steps and step % cfg.log.print_every_steps == 0:
            progress.print(f"step {step} epoch {row['epoch']} it {row['iteration']} | loss {m['loss']:.4f} "
                           f"rec {m['rec']:.4f} orth {m['orth']:.4g} face {m['face']:.4f} pose {m['pose']:.4f} | "
                           f"w {m['w_face']:.3f}/{m['w_pose']:.3f} lr {m['lr']:.3g} | {row['time_s']:.2f} s/it")
        ck = cfg.checkpoint
        due = (ck.every_steps and step % ck.every_steps == 0) or (
            epoch_done and ck.every_epochs and (self.epoch - 1) % ck.every_epochs == 0)
        if due:
            self._save()
            return step
        return saved_at

    def _save(self) -> None:
        if self.env.is_main:
            path = self.checkpoints.save(self.state_dict(), self.global_step)
            log.info("checkpoint %s", path)
        D.barrier()


def _flat_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = ""):
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            yield from _flat_diff(x, y, f"{prefix}{k}.")
        elif x != y:
            yield f"{prefix}{k}", x, y


def _check_face_batch(cfg: RunConfig, items: int) -> None:
    """A face batch larger than the items (identities) puts an identity twice in a batch: a negative that
    cannot be told from the positive. A setup check (``log.verdict_window``) would then fail on a sound
    setup, so it is refused; other runs are warned."""
    if cfg.batch.face <= items:
        return
    msg = (f"batch.face={cfg.batch.face} is larger than the {items} items (identities) in data.root="
           f"{cfg.data.root}: identities repeat within a face batch, and their views are negatives that cannot be "
           f"told from the positive; use batch.face={items} or less (ideally a divisor of {items})")
    if cfg.log.verdict_window:
        raise ValueError(msg + ", or a folder with more identities, for the setup check")
    log.warning(msg)
