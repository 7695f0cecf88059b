"""The sections of a training config (one dataclass each); :class:`facepcl.train.config.RunConfig` holds them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
        verdict_window: At the end, compare each optimised loss (rec, face,
            pose) over the first and the last this many iterations of the
            run and print a verdict; a loss that does not fall makes the
            command exit with status 3 (0: no verdict). The ``check``
            recipe uses it.
        verdict_min_drop: Smallest relative fall that counts (0.02: 2 %);
            the fall must also exceed twice its standard error.
    """

    every_steps: int = 1
    print_every_steps: int = 20
    image_every_steps: int = 50
    tensorboard: bool | str = "auto"
    progress: bool | str = "auto"
    verdict_window: int = 0
    verdict_min_drop: float = 0.02


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
