"""Common types of the dataset readers: image sources, labelled sets, pair lists.

A reader turns a dataset's own on-disk format into these types and checks it
while doing so: every malformed line or missing file is reported with the
file (and line) it comes from.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ...errors import FacePCLError

TASKS = ("classification", "multilabel", "regression")


class DatasetFormatError(FacePCLError, ValueError):
    """A dataset file is missing or does not have the format its reader expects."""


def format_error(path: str | os.PathLike, problem: str, fix: str, line: int | None = None) -> DatasetFormatError:
    """A :class:`DatasetFormatError` naming ``path[:line]``, the problem and the fix."""
    where = f"{path}:{line}" if line is not None else str(path)
    return DatasetFormatError(f"{where}: {problem}; {fix}")


def require_file(path: Path, what: str, fix: str) -> Path:
    """Return ``path`` if it is a file, else raise an error naming it and ``what`` it should be."""
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise format_error(path, f"{what} {state}", fix)
    return path


def require_dir(path: Path, what: str, fix: str) -> Path:
    """Return ``path`` if it is a folder, else raise an error naming it."""
    if not path.is_dir():
        state = "is a file" if path.exists() else "does not exist"
        raise format_error(path, f"{what} {state}", fix)
    return path


def check_images_exist(paths: Sequence[Path], listed_in: Path | str, fix: str) -> None:
    """Raise one error listing every listed image that is not on disk (first 10 named)."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(str(p) for p in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise format_error(listed_in, f"{len(missing)} of {len(paths)} listed images are missing: "
                           f"{shown}{more}", fix)


def read_image_file(path: str | os.PathLike) -> np.ndarray:
    """Read one image file as ``(H, W, 3)`` uint8 RGB with :func:`facepcl.io.load_image`, the one image loader."""
    from ...io import load_image

    return load_image(path)


class ImageSource:
    """N images read on demand, each as ``(H, W, 3)`` uint8 RGB."""

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, i: int) -> np.ndarray:
        """Image ``i`` as ``(H, W, 3)`` uint8 RGB."""
        raise NotImplementedError

    def describe(self, i: int) -> str:
        """Where image ``i`` comes from (a path, or ``file[index]``), for messages."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A digest that changes whenever any image may have changed (for feature caches)."""
        raise NotImplementedError

    def subset(self, idx: np.ndarray) -> ImageSource:
        """The images at ``idx``, in that order."""
        raise NotImplementedError


class PathImages(ImageSource):
    """Images stored as files.

    The fingerprint covers each path with its size and modification time,
    so editing, replacing or reordering any file changes it.
    """

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> np.ndarray:
        return read_image_file(self.paths[i])

    def describe(self, i: int) -> str:
        return str(self.paths[i])

    def fingerprint(self) -> str:
        h = hashlib.sha256(b"paths-v1")
        for p in self.paths:
            try:
                st = os.stat(p)
                h.update(f"{os.path.abspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{os.path.abspath(p)}\0missing\n".encode())
        return h.hexdigest()

    def subset(self, idx: np.ndarray) -> PathImages:
        return PathImages([self.paths[int(i)] for i in idx])


class ArrayImages(ImageSource):
    """Images held in one array (decoded from a CSV or an ``.npz``).

    Args:
        array: ``(N, H, W)`` grayscale or ``(N, H, W, 3)`` uint8.
        color_order: "RGB", "BGR" (converted on read) or "L" (grayscale,
            replicated to 3 channels on read).
        origin: Where the array came from, for messages, e.g. ``fer2013.csv``.
        origin_key: Identifies the source files (paths, sizes, mtimes) for the
            fingerprint; None hashes the array bytes instead.
        index: Original row of each image in ``origin`` (for messages).
    """

    def __init__(self, array: np.ndarray, color_order: str, origin: str, origin_key: str | None = None,
                 index: np.ndarray | None = None) -> None:
        if color_order not in ("RGB", "BGR", "L"):
            raise ValueError(f"color_order must be 'RGB', 'BGR' or 'L', got {color_order!r}")
        if array.dtype != np.uint8 or array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[3] != 3):
            raise ValueError(f"{origin}: images must be uint8 (N,H,W) or (N,H,W,3), got {array.dtype} "
                             f"{array.shape}")
        self.array = array
        self.color_order = "L" if array.ndim == 3 else color_order
        self.origin = origin
        self.origin_key = origin_key
        self.index = np.arange(len(array)) if index is None else np.asarray(index)

    def __len__(self) -> int:
        return len(self.array)

    def read(self, i: int) -> np.ndarray:
        img = self.array[i]
        if self.color_order == "L":
            return np.repeat(img[:, :, None], 3, axis=2)
        if self.color_order == "BGR":
            return np.ascontiguousarray(img[:, :, ::-1])
        return img

    def describe(self, i: int) -> str:
        return f"{self.origin}[{int(self.index[i])}]"

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"array-v1\0{self.color_order}\0{self.array.shape}\n".encode())
        if self.origin_key is None:
            h.update(np.ascontiguousarray(self.array).tobytes())
        else:
            h.update(self.origin_key.encode())
            h.update(np.ascontiguousarray(self.index, dtype=np.int64).tobytes())
        return h.hexdigest()

    def subset(self, idx: np.ndarray) -> ArrayImages:
        idx = np.asarray(idx, dtype=np.int64)
        return ArrayImages(self.array[idx], self.color_order, self.origin, self.origin_key, self.index[idx])


def files_key(paths: Sequence[str | os.PathLike]) -> str:
    """Identity of source files for :class:`ArrayImages`: absolute path, size and mtime of each."""
    parts = []
    for p in paths:
        st = os.stat(p)
        parts.append([os.path.abspath(p), st.st_size, st.st_mtime_ns])
    return json.dumps(parts)


@dataclass
class LabelledImages:
    """Images with one label (vector) each.

    Attributes:
        name: e.g. ``"rafdb/train"``.
        images: The images.
        labels: ``(N,)`` int64 class indices (classification), ``(N, K)``
            float32 0/1 (multilabel) or ``(N, K)`` float32 values (regression,
            e.g. [yaw, pitch, roll] in degrees).
        task: "classification", "multilabel" or "regression".
        label_names: Class names, label names or output names.
        groups: ``(N,)`` subject of each image where known (DISFA): splits
            and folds never put one subject on both sides.
    """

    name: str
    images: ImageSource
    labels: np.ndarray
    task: str
    label_names: list[str]
    groups: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if len(self.labels) != len(self.images):
            raise ValueError(f"{self.name}: {len(self.labels)} labels for {len(self.images)} images")
        if self.groups is not None and len(self.groups) != len(self.images):
            raise ValueError(f"{self.name}: {len(self.groups)} groups for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray, name: str | None = None) -> LabelledImages:
        """The samples at ``idx`` (a new object; images are not copied for path sources)."""
        idx = np.asarray(idx, dtype=np.int64)
        return replace(self, name=name or self.name, images=self.images.subset(idx), labels=self.labels[idx],
                       groups=None if self.groups is None else self.groups[idx])


@dataclass
class PairList:
    """Verification pairs over a set of distinct images.

    Attributes:
        name: e.g. ``"lfw"``.
        images: The distinct images the pairs refer to.
        pairs: ``(P, 2)`` int64 indices into ``images``.
        same: ``(P,)`` bool, True for same-identity pairs.
        folds: ``(P,)`` int64 fold of each pair (LFW: its 10 sets).
    """

    name: str
    images: ImageSource
    pairs: np.ndarray
    same: np.ndarray
    folds: np.ndarray
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pairs)


def unique_paths(paths: Sequence[Path]) -> tuple[list[Path], dict[Path, int]]:
    """Distinct paths in first-seen order and each one's index."""
    index: dict[Path, int] = {}
    for p in paths:
        index.setdefault(p, len(index))
    return list(index), index
