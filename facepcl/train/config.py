"""The training configuration: YAML defaults, ``key=value`` overrides, typed and checked.

A run is described by one :class:`RunConfig`. It is read from a YAML file
(or a bundled recipe by name, see :func:`resolve_config_path`), then
``dotted.key=value`` overrides from the command line are applied; values
are parsed as YAML scalars and checked against the field's type, and an
unknown key is an error naming the known ones. The resolved config is
written beside the checkpoints (``OUTPUT_DIR/config.yaml``) so a run can be
reproduced from its folder alone.

Batch sizes are global: with ``torchrun --nproc-per-node W`` each process
gets ``batch / W`` samples and the contrastive negatives, the BatchNorm
statistics and the orthogonality term are computed over the global batch,
so the optimisation problem does not depend on W.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .._version import __version__

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
POSE_NEGATIVES = ("per_sample", "reference")
LAYOUTS = ("video", "images")


@dataclass
class DataConfig:
    """Where the frames are and how an epoch is cut.

    Attributes:
        root: Folder of the training frames.
        layout: "video": ``root/identity/video/frame`` (VoxCeleb-style aligned
            face tracks; an item is an identity, which draws a random video,
            then a random frame, as the reference does). "images": any image
            files under ``root`` (recursively); an item is an image.
        list_file: Optional text file naming the item folders (video layout)
            or image files (images layout) relative to ``root``, one a line,
            like the reference's train list. None: everything under ``root``.
        image_size: Side of the network input in pixels (the decoder outputs
            64 x 64, so pretraining needs 64).
        samples_per_epoch: Items per epoch; None: the number of items (the
            reference). Iterations per epoch are ``samples_per_epoch //
            batch.rec`` (at least 1).
        num_workers: Data loader worker processes per rank (0: load in the
            main process).
        prefetch_factor: Batches each worker prepares ahead.
    """

    root: str = ""
    layout: str = "video"
    list_file: str | None = None
    image_size: int = 64
    samples_per_epoch: int | None = None
    num_workers: int = 4
    prefetch_factor: int = 2


@dataclass
class ModelConfig:
    """The network; the defaults are the paper's.

    Attributes:
        projection_hidden_dim: Hidden width of the projection heads (2048).
        projection_dim: Output width of the projection heads (512).
        decoder_dim: Width of the decoder's first feature map (512).
        init: Start from this facepcl model (folder, registered name or Hub
            id, loaded with all its components) instead of random weights:
            the way to fine-tune. None: random init (seeded).
    """

    projection_hidden_dim: int = 2048
    projection_dim: int = 512
    decoder_dim: int = 512
    init: str | None = None


@dataclass
class BatchConfig:
    """Global batch sizes of the three steps of one iteration.

    Attributes:
        rec: Frames of the reconstruction + orthogonality step (a).
        face: Frames of the face contrastive step (b); each gives 2 views.
        pose: Frames of the pose contrastive step (c); each gives 2 views.
        pose_negatives: M, flipped augmented copies per pose frame.
    """

    rec: int = 256
    face: int = 256
    pose: int = 10
    pose_negatives: int = 100


@dataclass
class LossConfig:
    """Loss settings.

    Attributes:
        temperature: Softmax temperature of both contrastive losses.
        beta_alpha: a of the Beta(a, a) mixing weights of the negatives.
        noise_std: Std of the Gaussian noise added to the encoder inputs of
            step (a), for pixels in [0, 1]; targets stay clean.
        orthogonality: Include L_orth in the optimised loss of step (a) (the
            paper, and the reference's main path). False reproduces the
            reference's warm-up path, which computes it but leaves it out.
        pose_negatives: "per_sample" (the paper: each anchor's negatives are
            the M flips of its own frame) or "reference" (the reference
            code's grouping: the M x B flips concatenated view-major, then cut
            into B groups of M). See docs/training.md.
        gather_distributed: Under torchrun, compute the contrastive and
            orthogonality losses over the global batch (all-gather with
            gradients). False uses each rank's local batch only, which
            changes the objective with the number of processes.
    """

    temperature: float = 0.07
    beta_alpha: float = 1.6
    noise_std: float = 0.4
    orthogonality: bool = True
    pose_negatives: str = "per_sample"
    gather_distributed: bool = True


@dataclass
class DWAConfig:
    """Dynamic Weight Average on the face and pose contrastive losses.

    Attributes:
        enabled: Use DWA (False: both weights stay 1).
        temperature: T of the softmax over the loss ratios.
        start_epoch: First (1-based) epoch that uses the ratios; earlier
            epochs use weight 1 (the reference: 3).
    """

    enabled: bool = True
    temperature: float = 2.0
    start_epoch: int = 3


@dataclass
class AugmentConfig:
    """Augmentations of the contrastive views (pcl-reference.md section 3).

    Attributes:
        face_patch: Side of each face patch as a fraction of the frame side.
        jitter: Colour jitter strengths (brightness, contrast, saturation, hue).
        jitter_p: Probability of applying the colour jitter.
        gray_p: Probability of converting to grayscale.
        blur_p: Probability of the Gaussian blur.
        blur_kernel: Blur kernel size in pixels (odd).
        blur_sigma: Range of the blur sigma in pixels.
        sobel_p: Probability of replacing the view by its gradient magnitude.
    """

    face_patch: float = 0.4
    jitter: list[float] = field(default_factory=lambda: [0.8, 0.8, 0.8, 0.2])
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.8
    blur_kernel: int = 7
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    sobel_p: float = 0.6


@dataclass
class OptimConfig:
    """Adam with L2 weight decay, cosine annealing stepped once per epoch.

    Attributes:
        lr: Initial learning rate.
        weight_decay: L2 penalty added to the gradient (Adam, not AdamW).
        betas: Adam betas.
        eps: Adam epsilon.
        cosine_epochs: T_max of the cosine schedule in epochs; None: the
            number of training epochs.
        min_lr: Learning rate at the end of the cosine.
        step_unused: Every parameter that has had a gradient takes an Adam
            step (momentum and weight decay) in each of the three steps, even
            when that step's loss does not touch it: what the reference does
            under the torch 1.7 it pins, whose ``zero_grad`` zeroes gradients
            instead of dropping them. False: each step updates only the
            parameters its loss reaches (today's ``zero_grad`` default).
    """

    lr: float = 1.0e-4
    weight_decay: float = 1.0e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1.0e-8
    cosine_epochs: int | None = None
    min_lr: float = 0.0
    step_unused: bool = True


@dataclass
class TrainConfig:
    """Length of the run and how it executes.

    Attributes:
        epochs: Epochs to train (1-based, as the reference counts them).
        max_steps: Stop after this many iterations in total (None: no limit);
            a checkpoint is written when the run stops.
        channels_last: Convolution memory format: True, False or "auto"
            (currently on everywhere: it was faster on CUDA and on the CPU).
        sync_batchnorm: Under torchrun, compute BatchNorm statistics over
            the global batch (needed for the result not to depend on the
            number of processes).
        deterministic: Ask torch for deterministic algorithms (slower on CUDA).
        threads: torch intra-op threads (None: torch's default).
        retain_cpu_memory: Keep freed memory in the process instead of
            returning it to the OS after every step (glibc only): True, False
            or "auto" (on when training on the CPU). It saves the kernel time
            of re-mapping gigabytes of activations each step; results are
            unchanged.
    """

    epochs: int = 800
    max_steps: int | None = None
    channels_last: bool | str = "auto"
    sync_batchnorm: bool = True
    deterministic: bool = False
    threads: int | None = None
    retain_cpu_memory: bool | str = "auto"


@dataclass
class CheckpointConfig:
    """Checkpoints (``OUTPUT_DIR/checkpoints``).

    Attributes:
        every_epochs: Write one after every this many epochs (None: never).
        every_steps: Write one after every this many iterations (None: never).
        keep_last: Keep this many most recent checkpoints (older ones are
            deleted; 0 keeps all).
        resume: "auto" (continue from the latest checkpoint in the output
            folder if there is one), "never" (refuse to start in a folder
            that has checkpoints), or the path of a checkpoint file.
    """

    every_epochs: int | None = 50
    every_steps: int | None = None
    keep_last: int = 3
    resume: str = "auto"


@dataclass
class LogConfig:
    """Logs (``OUTPUT_DIR/metrics.jsonl``, ``metrics.csv``, ``images/``).

    Attributes:
        every_steps: Write the per-step metrics every this many iterations.
        print_every_steps: Also print them every this many iterations (0: never).
        image_every_steps: Save a reconstruction grid every this many
            iterations (0: never); the reference logs one every 50.
        tensorboard: True, False or "auto" (when tensorboard is installed).
        progress: True, False or "auto" (a progress bar on rank 0 when
            stderr is a terminal).
    """

    every_steps: int = 1
    print_every_steps: int = 20
    image_every_steps: int = 50
    tensorboard: bool | str = "auto"
    progress: bool | str = "auto"


@dataclass
class ExportConfig:
    """Export of the final weights in the facepcl Hub format (``facepcl.load`` reads it).

    Attributes:
        enabled: Export when the run ends.
        dir: Target folder (None: ``OUTPUT_DIR/model``).
        name: Model name written into ``config.json``.
        license: Licence of the weights, for the model card.
        source: Provenance text for the model card (the run adds its own).
        preprocess: How the training frames were made, as
            :class:`facepcl.config.PreprocessConfig` fields (crop_size,
            template, ...); None: the package default at ``image_size``.
    """

    enabled: bool = True
    dir: str | None = None
    name: str = "pcl"
    license: str = "unknown"
    source: str = ""
    preprocess: dict[str, Any] | None = None


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


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = _hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown keys {[prefix + k for k in unknown]}; known keys"
                         f"{' under ' + prefix.rstrip('.') if prefix else ''}: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, prefix + name)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a type hint, converting only lossless cases (int -> float, '1e-4' -> float)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _coerce(value, opt, key)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(f"config key {key}: {value!r} fits none of {_name(hint)}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config key {key}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"config key {key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"config key {key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"config key {key}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
            except ValueError:
                pass
        raise ValueError(f"config key {key}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"config key {key}: expected a string, got {value!r}")
    raise ValueError(f"config key {key}: unsupported type {_name(hint)}")  # pragma: no cover


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)
