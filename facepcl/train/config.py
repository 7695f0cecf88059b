"""The training configuration: YAML defaults, ``key=value`` overrides, typed and checked.

A run is described by one :class:`RunConfig`. It is read from a YAML file
(or a bundled recipe by name, see :func:`resolve_config_path`), then
``dotted.key=value`` overrides from the command line are applied; values
are parsed as YAML scalars and checked against the field's type, and an
unknown key is an error naming the known ones. The resolved config is
written beside the checkpoints (``OUTPUT_DIR/config.yaml``) so a run can be
reproduced from its folder alone.

Batch sizes are global: with ``torchrun --nproc-per-node W`` each process
gets its contiguous share of every batch (uneven when W does not divide
it), and the contrastive negatives, the BatchNorm statistics and the
orthogonality term are computed over the global batch, so the optimisation
problem does not depend on W.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MissingExtraError

try:
    import yaml
except ImportError as e:  # pragma: no cover - exercised in a subprocess test
    raise MissingExtraError(
        "facepcl's training configs need the training extra, which is not installed (missing module: pyyaml). "
        'Install it with: pip install "facepcl[train]"'
    ) from e

from .._utils.version import __version__
from ._coerce import build as _build
from ._coerce import coerce as _coerce
from ._coerce import hints as _hints
from ._sections import (
    AugmentConfig,
    BatchConfig,
    CheckpointConfig,
    DataConfig,
    DWAConfig,
    ExportConfig,
    LogConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from .losses.pose_contrastive import POSE_NEGATIVES

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LAYOUTS = ("video", "images")


@dataclass
class RunConfig:
    """One training run.

    Attributes:
        output_dir: Folder for checkpoints, logs, images and the export.
        seed: Seed of everything random (model init, data, augmentations,
            Beta mixing); a run is a function of its config.
        device: "cpu", "cuda", "cuda:N" or None (CUDA when available; under
            torchrun each process takes its LOCAL_RANK's GPU).
        precision: "fp32", "bf16", "fp16" (CUDA only, with a grad scaler) or
            "auto" (bf16 on CUDA when supported, else fp16; bf16 on CPUs with
            native bf16 support, else fp32).
    """

    output_dir: str = "runs/pcl"
    seed: int = 1234
    device: str | None = None
    precision: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    dwa: DWAConfig = field(default_factory=DWAConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-serialisable)."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The resolved config as YAML, headed by the facepcl version that resolved it."""
        body = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        return f"# resolved by facepcl {__version__}\n" + body

    def validate(self) -> RunConfig:
        """Check values that types alone do not catch; raises ValueError naming the key."""
        def need(ok: bool, key: str, msg: str) -> None:
            if not ok:
                raise ValueError(f"config key {key}: {msg}")

        need(self.precision in PRECISIONS, "precision", f"must be one of {PRECISIONS}, got {self.precision!r}")
        need(self.data.layout in LAYOUTS, "data.layout", f"must be one of {LAYOUTS}, got {self.data.layout!r}")
        need(self.data.image_size == 64, "data.image_size",
             f"the PCL decoder outputs 64x64 images, so pretraining needs 64 (got {self.data.image_size})")
        need(self.loss.pose_negatives in POSE_NEGATIVES, "loss.pose_negatives",
             f"must be one of {POSE_NEGATIVES}, got {self.loss.pose_negatives!r}")
        for key in ("rec", "face", "pose", "pose_negatives"):
            need(getattr(self.batch, key) >= 1, f"batch.{key}", "must be at least 1")
        need(self.batch.pose_negatives >= 2, "batch.pose_negatives",
             "must be at least 2 (the negatives are mixed with a permutation of each other)")
        need(self.loss.temperature > 0, "loss.temperature", "must be positive")
        need(self.loss.beta_alpha > 0, "loss.beta_alpha", "must be positive")
        need(self.loss.noise_std >= 0, "loss.noise_std", "must be >= 0")
        need(self.dwa.temperature > 0, "dwa.temperature", "must be positive")
        need(self.dwa.start_epoch >= 3, "dwa.start_epoch",
             "must be >= 3: the weights use the mean losses of the two previous epochs")
        need(len(self.augment.jitter) == 4, "augment.jitter", "needs 4 values: brightness, contrast, saturation, hue")
        need(0 <= self.augment.jitter[3] <= 0.5, "augment.jitter", "hue strength must lie in [0, 0.5]")
        need(len(self.augment.blur_sigma) == 2 and 0 < self.augment.blur_sigma[0] <= self.augment.blur_sigma[1],
             "augment.blur_sigma", "needs [min, max] with 0 < min <= max")
        need(self.augment.blur_kernel % 2 == 1 and self.augment.blur_kernel >= 1, "augment.blur_kernel",
             "must be a positive odd number")
        need(0 < self.augment.face_patch <= 0.5, "augment.face_patch",
             "must lie in (0, 0.5]: each patch sits inside one quadrant")
        for key in ("jitter_p", "gray_p", "blur_p", "sobel_p"):
            p = getattr(self.augment, key)
            need(0.0 <= p <= 1.0, f"augment.{key}", f"is a probability, got {p}")
        need(len(self.optim.betas) == 2, "optim.betas", "needs two values")
        need(self.optim.lr > 0, "optim.lr", "must be positive")
        need(self.train.epochs >= 1, "train.epochs", "must be at least 1")
        need(self.train.max_steps is None or self.train.max_steps >= 1, "train.max_steps", "must be >= 1 or null")
        need(self.train.channels_last in (True, False, "auto"), "train.channels_last",
             "must be true, false or auto")
        need(self.train.retain_cpu_memory in (True, False, "auto"), "train.retain_cpu_memory",
             "must be true, false or auto")
        need(self.log.tensorboard in (True, False, "auto"), "log.tensorboard", "must be true, false or auto")
        need(self.log.progress in (True, False, "auto"), "log.progress", "must be true, false or auto")
        need(self.data.num_workers >= 0, "data.num_workers", "must be >= 0")
        need(self.checkpoint.keep_last >= 0, "checkpoint.keep_last", "must be >= 0")
        need(self.log.verdict_window >= 0, "log.verdict_window", "must be >= 0 (0: no verdict)")
        need(0 <= self.log.verdict_min_drop < 1, "log.verdict_min_drop", "must lie in [0, 1)")
        if self.export.preprocess is not None:
            from ..config import PreprocessConfig

            try:
                PreprocessConfig(**self.export.preprocess)
            except TypeError as e:
                raise ValueError(f"config key export.preprocess: {e}") from e
        return self


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A YAML path, or the bundled config of that name (``pcl``, ``smoke``)."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    bundled = CONFIG_DIR / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    names = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"config {str(name_or_path)!r}: no such file, and no bundled config of that name "
                            f"(bundled: {names}); pass a YAML file path")


def load_config(name_or_path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a config and apply ``key=value`` overrides.

    Args:
        name_or_path: YAML file or bundled config name; None: the defaults
            (the paper's recipe without a data root).
        overrides: ``dotted.key=value`` strings, e.g. ``["batch.rec=64",
            "optim.lr=3e-4", "data.root=/data/vox"]``; values are YAML.

    Returns:
        A validated :class:`RunConfig`.

    Raises:
        ValueError: Unknown key, wrong type or invalid value; the message
            names the key and the file.
    """
    data: dict[str, Any] = {}
    where = "defaults"
    if name_or_path is not None:
        path = resolve_config_path(name_or_path)
        where = str(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({e})") from e
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the top level must be a mapping of config keys")
    try:
        cfg = _build(RunConfig, data, "")
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e
    for item in overrides:
        apply_override(cfg, item)
    return cfg.validate()


def apply_override(cfg: RunConfig, item: str) -> None:
    """Apply one ``dotted.key=value`` override in place (value parsed as YAML)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"override {item!r}: expected key=value, e.g. batch.rec=64")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ValueError(f"override {item!r}: the value is not valid YAML ({e})") from e
    parts = key.split(".")
    target: Any = cfg
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(target)}
        if part not in fields:
            prefix = ".".join(parts[:i])
            raise ValueError(f"override {item!r}: unknown key {key!r}; keys under "
                             f"{prefix or 'the top level'}: {sorted(fields)}")
        hint = _hints(type(target))[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(hint) and isinstance(value, dict):
                setattr(target, part, _build(hint, value, key + "."))
            else:
                setattr(target, part, _coerce(value, hint, key))
        else:
            target = getattr(target, part)
            if not dataclasses.is_dataclass(target):
                raise ValueError(f"override {item!r}: {'.'.join(parts[:i + 1])} is not a section")


def save_resolved(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config (atomically) to ``path``."""
    from .checkpoint import atomic_write_text

    atomic_write_text(Path(path), cfg.to_yaml())
