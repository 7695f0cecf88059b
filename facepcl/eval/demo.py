"""Tiny synthetic datasets written in each dataset's exact on-disk format.

For the examples' ``--demo`` mode and the tests: no labelled face data can
be shipped, so these write small files that the real readers read, with
images whose label is visible (a class is a coloured block at its own
place, an AU a bar, a pose a moving blob), so that a probe on random-weight
features can learn them. They are synthetic: numbers obtained on them say
nothing about faces.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .datasets.fer2013 import SIDE as FER_SIDE
from .datasets.rafdb import IMAGE_DIR as RAF_IMAGES
from .datasets.rafdb import LIST_FILE as RAF_LIST


def _save(img: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"quality": 95} if path.suffix == ".jpg" else {}
    Image.fromarray(img).save(path, **kwargs)


def class_image(label: int, num_classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``(size, size, 3)`` uint8: noise plus a bright block whose place and colour encode ``label``."""
    img = rng.integers(40, 90, (size, size, 3), dtype=np.uint8)
    cells = int(np.ceil(np.sqrt(num_classes)))
    cell = size // cells
    r, c = divmod(label, cells)
    colour = np.array([(label * 97) % 256, (label * 53 + 120) % 256, 255 - (label * 31) % 200], np.uint8)
    img[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = colour
    return img


def identity_image(identity: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """An "identity": a fixed random 4x4 colour mosaic (seeded by ``identity``) plus fresh noise."""
    base = np.random.default_rng(1000 + identity).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    img = np.kron(base, np.ones((size // 4, size // 4, 1), np.uint8))
    noise = rng.integers(-20, 21, img.shape)
    return np.clip(img.astype(np.int64) + noise, 0, 255).astype(np.uint8)


def pose_image(angles: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A blob whose x, y and brightness follow yaw, pitch and roll (degrees in [-90, 90])."""
    yaw, pitch, roll = (np.asarray(angles, float) / 90.0)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    cx, cy = 0.5 + 0.35 * yaw, 0.5 + 0.35 * pitch
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)
    img = np.stack([blob * 255, blob * (127 + 127 * roll), 80 * np.ones_like(blob)], -1)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def au_image(active: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One horizontal bar per label, bright when the label is active."""
    img = rng.integers(30, 60, (size, size, 3), dtype=np.uint8)
    band = size // len(active)
    for k, on in enumerate(active):
        if on:
            img[k * band : k * band + max(1, band // 2), :, :] = (230, 200, 90)
    return img


def make_rafdb(root: str | Path, per_class: int = 6, size: int = 100, seed: int = 0) -> Path:
    """RAF-DB basic: ``EmoLabel/list_patition_label.txt`` + ``Image/aligned/*_aligned.jpg`` (7 classes)."""
    root, rng = Path(root), np.random.default_rng(seed)
    lines = []
    for split, n in (("train", per_class), ("test", max(2, per_class // 2))):
        k = 0
        for label in range(7):
            for _ in range(n):
                k += 1
                name = f"{split}_{k:05d}" if split == "train" else f"{split}_{k:04d}"
                _save(class_image(label, 7, size, rng), root / RAF_IMAGES / f"{name}_aligned.jpg")
                lines.append(f"{name}.jpg {label + 1}")
    (root / RAF_LIST).parent.mkdir(parents=True, exist_ok=True)
    (root / RAF_LIST).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def make_fer2013(path: str | Path, per_class: int = 6, seed: int = 0) -> Path:
    """``fer2013.csv`` with Training / PublicTest / PrivateTest rows of 48x48 grayscale pixel strings."""
    path, rng = Path(path), np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        for usage, n in (("Training", per_class), ("PublicTest", max(2, per_class // 2)),
                         ("PrivateTest", max(2, per_class // 2))):
            for label in range(7):
                for _ in range(n):
                    gray = class_image(label, 7, FER_SIDE, rng).mean(2).astype(np.uint8)
                    w.writerow([label, " ".join(map(str, gray.ravel())), usage])
    return path


def make_fsanet(path: str | Path, n: int = 60, size: int = 64, seed: int = 0, extreme: int = 0) -> Path:
    """An FSA-Net ``.npz``: ``image`` (N,64,64,3) uint8 BGR, ``pose`` (N,3) degrees, ``img_size``.

    ``extreme`` extra samples get a yaw of 120 degrees (dropped by the reader, as AFLW2000's 31 are).
    """
    path, rng = Path(path), np.random.default_rng(seed)
    pose = rng.uniform(-80, 80, (n, 3)).astype(np.float64)
    imgs = np.stack([pose_image(p, size, rng)[:, :, ::-1] for p in pose])  # stored BGR, as cv2 writes it
    if extreme:
        ext = np.tile([[120.0, 0.0, 0.0]], (extreme, 1))
        imgs = np.concatenate([imgs, np.zeros((extreme, size, size, 3), np.uint8)])
        pose = np.concatenate([pose, ext])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, image=imgs, pose=pose, img_size=size)
    return path


def make_lfw(root: str | Path, sets: int = 10, per: int = 6, size: int = 64, seed: int = 0) -> Path:
    """LFW: ``pairs.txt`` ("10 N" header, N matched then N mismatched per set) + ``lfw/NAME/NAME_0001.jpg``."""
    root, rng = Path(root), np.random.default_rng(seed)
    lines = [f"{sets}\t{per}"]
    people = sets * per
    for p in range(people):
        for k in (1, 2):
            _save(identity_image(p, size, rng), root / "lfw" / f"Person_{p:03d}" / f"Person_{p:03d}_{k:04d}.jpg")
    for s in range(sets):
        for j in range(per):
            p = s * per + j
            lines.append(f"Person_{p:03d}\t1\t2")
        for j in range(per):
            a = s * per + j
            b = s * per + (j + 1) % per
            lines.append(f"Person_{a:03d}\t1\tPerson_{b:03d}\t2")
    (root / "pairs.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def make_cplfw(root: str | Path, folds: int = 10, per: int = 6, size: int = 64, seed: int = 0) -> Path:
    """CPLFW: ``pairs_CPLFW.txt`` (two lines per pair, label 1/0; per fold ``per`` same then ``per``
    different) + ``images/Name_1.jpg``."""
    root, rng = Path(root), np.random.default_rng(seed)
    lines = []
    for f in range(folds):
        for j in range(per):
            p = f * per + j
            for k in (1, 2):
                _save(identity_image(p, size, rng), root / "images" / f"Person_{p:03d}_{k}.jpg")
            lines += [f"Person_{p:03d}_1.jpg 1", f"Person_{p:03d}_2.jpg 1"]
        for j in range(per):
            a, b = f * per + j, f * per + (j + 1) % per
            lines += [f"Person_{a:03d}_1.jpg 0", f"Person_{b:03d}_2.jpg 0"]
    (root / "pairs_CPLFW.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def make_disfa(root: str | Path, subjects: int = 3, frames: int = 12, size: int = 64, seed: int = 0,
               aus: tuple[int, ...] = (1, 2, 4, 6, 9, 12, 25, 26)) -> tuple[Path, Path]:
    """DISFA: ``ActionUnit_Labels/SNxxx/SNxxx_au<N>.txt`` ("frame,intensity") + ``frames/SNxxx/<frame>.jpg``.

    Returns:
        ``(labels_root, frames_root)``.
    """
    root, rng = Path(root), np.random.default_rng(seed)
    labels_root, frames_root = root / "ActionUnit_Labels", root / "frames"
    for s in range(1, subjects + 1):
        sn = f"SN{s:03d}"
        inten = rng.integers(0, 6, (frames, len(aus)))
        for k, au in enumerate(aus):
            d = labels_root / sn
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{sn}_au{au}.txt").write_text("".join(f"{i + 1},{inten[i, k]}\n" for i in range(frames)),
                                                encoding="utf-8")
        for i in range(frames):
            _save(au_image(inten[i] >= 2, size, rng), frames_root / sn / f"{i + 1}.jpg")
    return labels_root, frames_root


def make_bu3dfe(root: str | Path, per_class: int = 6, classes: int = 4, size: int = 64, seed: int = 0) -> Path:
    """BU-3DFE lists as the reference reads them: ``train_list.txt``/``test_list.txt`` of
    ``path,expression,pose`` lines; the label (third field) is visible in the image."""
    root, rng = Path(root), np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", max(2, per_class // 2))):
        lines = []
        for label in range(classes):
            for k in range(n):
                rel = f"imgs/{split}_{label}_{k}.png"
                _save(class_image(label, classes, size, rng), root / rel)
                lines.append(f"{rel},{(label + k) % 7},{label}")
        (root / f"{split}_list.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def make_image_folder(root: str | Path, classes: tuple[str, ...] = ("cat", "dog", "owl"), per_class: int = 6,
                      size: int = 64, seed: int = 0) -> Path:
    """``ROOT/train/<class>/*.png`` and ``ROOT/test/<class>/*.png``."""
    root, rng = Path(root), np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", max(2, per_class // 2))):
        for i, c in enumerate(classes):
            for k in range(n):
                _save(class_image(i, len(classes), size, rng), root / split / c / f"{k}.png")
    return root
