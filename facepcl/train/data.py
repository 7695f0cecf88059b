"""Training frames: folder layouts, per-sample seeding, and the per-iteration batch sampler.

Two layouts (``data.layout``):

- ``video``: ``root/identity/video/frame.(jpg|png|...)``, as VoxCeleb's
  aligned face tracks and ``facepcl prepare``'s output (identity folders
  whose name starts with ``_`` or ``.`` are skipped). An item is an
  identity; each draw picks a random video of it, then a random frame of
  that video (the reference's sampling).
- ``images``: any image files under ``root`` (recursively); an item is an image.

Nothing is held in memory but the folder index: frames are read when a
batch needs them. Every sample of every iteration has its own random
generator, seeded by ``(seed, stream, epoch, iteration, slot)``, which
decides the frame, the face patches, the augmentation parameters and the
noise. The data of a run is therefore a function of its config alone: it
does not depend on the number of loader workers or of processes, and a
resumed run sees exactly the samples an uninterrupted one would have.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ImageLoadError
from ..io import load_image
from .augment import quadrant_patches, resize, sample_view_params
from .config import RunConfig
from .distributed import split

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
REC, FACE, POSE = 0, 1, 2
STREAMS = ("rec", "face", "pose")
_ORDER_TAG = 7  # separates the epoch-order generators from the per-sample ones
_MAX_TRIES = 10


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _has_image(folder: str) -> bool:
    try:
        with os.scandir(folder) as it:
            return any(e.is_file() and _is_image(e.name) for e in it)
    except OSError:
        return False


@functools.lru_cache(maxsize=16384)
def _frames(folder: str) -> tuple[str, ...]:
    # Sorted: directory order differs between file systems, the draw must not.
    with os.scandir(folder) as it:
        return tuple(sorted(e.name for e in it if e.is_file() and _is_image(e.name)))


def _read_list(list_file: str | os.PathLike) -> list[str]:
    path = Path(list_file).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ValueError(f"data.list_file {path}: cannot read it ({e})") from e
    names = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not names:
        raise ValueError(f"data.list_file {path}: names no items")
    return names


class VideoTracks:
    """``root/identity/video/frame`` folders; an item is an identity.

    Args:
        root: Dataset root.
        list_file: Optional file naming identity folders relative to ``root``.

    Raises:
        ValueError: ``root`` is missing or holds no identity with a video of frames.
    """

    def __init__(self, root: str | os.PathLike, list_file: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise ValueError(f"data.root {self.root}: no such folder; expected root/identity/video/frame.jpg")
        if list_file:
            names = _read_list(list_file)
        else:
            with os.scandir(self.root) as it:
                # "_" and "." folders are bookkeeping (facepcl prepare's _prepare/), not identities.
                names = sorted(e.name for e in it if e.is_dir() and not e.name.startswith(("_", ".")))
        self.items: list[tuple[str, tuple[str, ...]]] = []
        self.skipped: list[str] = []
        for name in names:
            folder = self.root / name
            try:
                with os.scandir(folder) as it:
                    videos = tuple(sorted(e.name for e in it if e.is_dir() and _has_image(e.path)))
            except OSError:
                videos = ()
            if videos:
                self.items.append((str(folder), videos))
            else:
                self.skipped.append(name)
        if self.skipped:
            log.warning("%s: %d identity folders hold no video folder with frames and are skipped (first: %s)",
                        self.root, len(self.skipped), ", ".join(self.skipped[:5]))
        if not self.items:
            raise ValueError(f"data.root {self.root}: no identity folder holds a video folder with image frames; "
                             "expected root/identity/video/frame.jpg (or set data.layout=images for a flat "
                             "folder of images)")

    def __len__(self) -> int:
        return len(self.items)

    def pick(self, index: int, rng: np.random.Generator) -> str:
        """A random frame of a random video of identity ``index``."""
        folder, videos = self.items[index]
        video = os.path.join(folder, videos[int(rng.integers(len(videos)))])
        try:
            frames = _frames(video)
        except OSError as e:  # removed or unreadable since the index was built
            raise ImageLoadError(f"{video}: cannot list the video folder ({e.strerror or e})") from None
        if not frames:
            raise ImageLoadError(f"{video}: the video folder has no frames any more")
        return os.path.join(video, frames[int(rng.integers(len(frames)))])


class ImageFiles:
    """Image files under ``root`` (recursively); an item is an image.

    Args:
        root: Folder of images.
        list_file: Optional file naming images relative to ``root``.
    """

    def __init__(self, root: str | os.PathLike, list_file: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise ValueError(f"data.root {self.root}: no such folder")
        if list_file:
            self.files = [str(self.root / n) for n in _read_list(list_file)]
        else:
            self.files = sorted(str(p) for p in self.root.rglob("*") if p.is_file() and _is_image(p.name))
        if not self.files:
            raise ValueError(f"data.root {self.root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")

    def __len__(self) -> int:
        return len(self.files)

    def pick(self, index: int, rng: np.random.Generator) -> str:
        return self.files[index]


def build_source(cfg: RunConfig) -> VideoTracks | ImageFiles:
    """The frame source named by ``cfg.data``."""
    if not cfg.data.root:
        raise ValueError("config key data.root is empty: pass data.root=/path/to/frames")
    cls = VideoTracks if cfg.data.layout == "video" else ImageFiles
    return cls(cfg.data.root, cfg.data.list_file)


class PCLFrames(Dataset):
    """Turns a request ``(stream, item, seed, epoch, iteration, slot)`` into one sample.

    Samples (uint8 images are ``(S, S, 3)``, S = ``image_size``):

    - rec: ``(REC, frame, noise)``, noise ``(2, S, S, 3)`` float32 standard
      normal (for the frame and its flip);
    - face: ``(FACE, patches (2, S, S, 3), params (2, P))``;
    - pose: ``(POSE, frame, params (2 + M, P))``: two anchor views, then M
      flipped negatives.

    A frame or video folder that cannot be read is logged with a count and
    replaced by another draw (see :meth:`_image`); the run goes on.
    """

    def __init__(self, source: VideoTracks | ImageFiles, cfg: RunConfig) -> None:
        self.source = source
        self.size = cfg.data.image_size
        self.augment = cfg.augment
        self.negatives = cfg.batch.pose_negatives
        self._bad: set[str] = set()

    def __len__(self) -> int:
        return len(self.source)

    def _image(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """A readable frame of item ``index``, else of other items drawn with ``rng``.

        A frame (or a video folder) that cannot be read is logged once, with
        the count of skipped ones so far, and another is drawn: first of the
        same item, then, after two failures, of another item (an identity may
        be unreadable as a whole). Only :data:`_MAX_TRIES` failures in a row
        stop the run: then the dataset itself is broken.
        """
        tried = []
        for attempt in range(_MAX_TRIES):
            path = None
            try:
                path = self.source.pick(index, rng)
                return load_image(path)
            except ImageLoadError as e:
                where = path or str(e).split(": ", 1)[0]  # the frame, or the video folder pick() could not list
                tried.append(where)
                if where not in self._bad:
                    self._bad.add(where)
                    log.warning("skipping an unreadable training frame (%d skipped so far): %s", len(self._bad), e)
            if isinstance(self.source, ImageFiles) or attempt >= 1:
                index = int(rng.integers(len(self.source)))
        raise ImageLoadError(f"{_MAX_TRIES} draws in a row gave unreadable frames ({', '.join(tried[:3])}, ...); "
                             "check the dataset under data.root")

    def __getitem__(self, request: tuple[int, ...]) -> tuple:
        stream, index, *key = request
        rng = np.random.default_rng(np.random.SeedSequence([int(k) for k in key] + [int(stream)]))
        image = self._image(int(index), rng)
        if stream == REC:
            noise = rng.standard_normal((2, self.size, self.size, 3), dtype=np.float32)
            return REC, torch.from_numpy(resize(image, self.size)), torch.from_numpy(noise)
        if stream == FACE:
            patches = quadrant_patches(image, rng, self.augment.face_patch, self.size)
            return FACE, torch.from_numpy(patches), torch.from_numpy(sample_view_params(rng, 2, self.augment))
        params = sample_view_params(rng, 2 + self.negatives, self.augment)
        return POSE, torch.from_numpy(resize(image, self.size)), torch.from_numpy(params)


def collate(samples: list[tuple]) -> dict[str, torch.Tensor]:
    """Stack a list of samples into ``rec_frames``, ``rec_noise``, ``face_patches``, ``face_params``,
    ``pose_frames`` and ``pose_params`` (stream order as in the request list)."""
    out: dict[str, torch.Tensor] = {}
    by = {s: [x for x in samples if x[0] == s] for s in (REC, FACE, POSE)}
    if by[REC]:
        out["rec_frames"] = torch.stack([x[1] for x in by[REC]])
        out["rec_noise"] = torch.stack([x[2] for x in by[REC]])
    if by[FACE]:
        out["face_patches"] = torch.stack([x[1] for x in by[FACE]])
        out["face_params"] = torch.stack([x[2] for x in by[FACE]])
    if by[POSE]:
        out["pose_frames"] = torch.stack([x[1] for x in by[POSE]])
        out["pose_params"] = torch.stack([x[2] for x in by[POSE]])
    return out


class StepSampler:
    """For each iteration from a start position on, the requests of one rank.

    In epoch ``e`` each stream visits the items in its own seeded random
    order (concatenated permutations when an epoch needs more samples than
    there are items); iteration ``i`` takes global slots ``i*G .. i*G+G-1``
    of that order (G = the stream's global batch), and rank r takes the r-th
    contiguous block of them (:func:`facepcl.train.distributed.split`: sizes
    differ by at most one when ``world`` does not divide G), so the ranks'
    gathered features are in global batch order.

    Args:
        num_items: Items in the dataset.
        batches: Global batch per stream, ``(rec, face, pose)``.
        iters_per_epoch: Iterations per epoch.
        seed: Run seed.
        world: Number of processes.
        rank: This process.
        start: ``(epoch, iteration)`` of the first iteration to yield (epoch 1-based).
        steps: Number of iterations to yield.
    """

    def __init__(self, num_items: int, batches: tuple[int, int, int], iters_per_epoch: int, seed: int,
                 world: int, rank: int, start: tuple[int, int], steps: int) -> None:
        for name, g in zip(STREAMS, batches, strict=True):
            if g < world:
                raise ValueError(f"batch.{name}={g} is smaller than the {world} processes: every process needs "
                                 f"at least one sample of each step; batch sizes are global, so use at least "
                                 f"{world}, or fewer processes")
        self.num_items, self.batches, self.iters = num_items, batches, iters_per_epoch
        self.seed, self.world, self.rank = seed, world, rank
        self.start, self.steps = start, steps

    def __len__(self) -> int:
        return self.steps

    def order(self, stream: int, epoch: int) -> np.ndarray:
        """The item order of ``stream`` in ``epoch``: ``(iters_per_epoch * G,)`` indices."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _ORDER_TAG, stream, epoch]))
        need = self.iters * self.batches[stream]
        reps = math.ceil(need / self.num_items)
        return np.concatenate([rng.permutation(self.num_items) for _ in range(reps)])[:need]

    def __iter__(self) -> Iterator[list[tuple[int, ...]]]:
        epoch, it = self.start
        orders = None
        for _ in range(self.steps):
            if orders is None:
                orders = [self.order(s, epoch) for s in range(3)]
            requests = []
            for s, g in enumerate(self.batches):
                offset, local = split(g, self.world, self.rank)
                first = it * g + offset
                requests += [(s, int(orders[s][slot]), self.seed, epoch, it, slot)
                             for slot in range(first, first + local)]
            yield requests
            it += 1
            if it == self.iters:
                epoch, it, orders = epoch + 1, 0, None


def _worker_init(_: int) -> None:
    # Workers decode and crop; one thread each keeps them off the training threads.
    torch.set_num_threads(1)


def build_loader(dataset: PCLFrames, sampler: StepSampler, cfg: RunConfig, device: torch.device) -> DataLoader:
    """A DataLoader yielding one collated dict per iteration."""
    workers = cfg.data.num_workers
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=device.type == "cuda", worker_init_fn=_worker_init if workers else None,
                      prefetch_factor=cfg.data.prefetch_factor if workers else None)
