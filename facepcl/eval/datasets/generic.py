"""The user's own data: a folder per class, or a CSV of image paths and labels.

Folder per class (torchvision ``ImageFolder`` layout)::

    ROOT/train/<class>/*.jpg   ROOT/test/<class>/*.jpg   (optional ROOT/val/<class>/)
    or ROOT/<class>/*.jpg      (one split, "all")

CSV of labels (header required; paths relative to the CSV's folder, or to
``image_dir``)::

    path,label[,split]                       classification (class names or integers)
    path,AU1,AU2,...[,split]                 multilabel (0/1 per column)
    path,yaw,pitch,roll[,split]              regression (numbers)

An optional ``split`` column (train/val/test) splits the rows; without it
every row is in split "all".
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ._base import TASKS, LabelledImages, PathImages, check_images_exist, format_error, require_dir, require_file

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
_PATH_COLUMNS = ("path", "image", "file", "filename")


def read_image_folder(root: str | Path) -> dict[str, LabelledImages]:
    """Read a folder-per-class dataset.

    Returns:
        ``{"train", "test"[, "val"]}`` when ``root`` has such subfolders,
        else ``{"all": ...}``; class names are the folder names, sorted, and
        the same classes (union over splits) index every split.
    """
    root = require_dir(Path(root), "image folder", "pass a folder of class folders (or train/ and test/)")
    split_dirs = {s: root / s for s in SPLITS if (root / s).is_dir()}
    if not split_dirs:
        split_dirs = {"all": root}
    per_split = {}
    for split, d in split_dirs.items():
        classes = {c.name: sorted(p for p in c.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
                   for c in sorted(d.iterdir()) if c.is_dir()}
        per_split[split] = classes
    names = sorted({c for classes in per_split.values() for c in classes})
    if not names:
        raise format_error(root, "has no class folders", "put each class's images in a folder named after it")
    index = {c: i for i, c in enumerate(names)}
    out = {}
    for split, classes in per_split.items():
        paths = [p for c in sorted(classes) for p in classes[c]]
        labels = [index[c] for c in sorted(classes) for _ in classes[c]]
        if not paths:
            raise format_error(split_dirs[split], "holds no images", f"image files end in {IMAGE_EXTENSIONS}")
        out[split] = LabelledImages(f"{root.name}/{split}", PathImages(paths), np.asarray(labels, np.int64),
                                    "classification", list(names))
    return out


def read_label_csv(path: str | Path, task: str, *, image_dir: str | Path | None = None,
                   label_names: list[str] | None = None) -> dict[str, LabelledImages]:
    """Read a CSV of image paths and labels.

    Args:
        path: The CSV file (header row required).
        task: "classification", "multilabel" or "regression".
        image_dir: Folder image paths are relative to (default: the CSV's folder).
        label_names: Class order for classification (default: sorted distinct
            values; integers sort numerically).

    Returns:
        Sets keyed by the ``split`` column's values, or ``{"all": ...}``.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    path = require_file(Path(path), "label CSV", "pass a CSV with a header row 'path,label[,split]'")
    base = Path(image_dir) if image_dir else path.parent
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise format_error(path, "is empty", "add a header row 'path,label' and one row per image")
    header = [h.strip() for h in rows[0]]
    if header[0].lower() not in _PATH_COLUMNS or len(header) < 2:
        raise format_error(path, f"header {header} does not start with a path column",
                           f"first column must be named one of {_PATH_COLUMNS}, then the label column(s)", 1)
    split_col = header.index("split") if "split" in header else None
    label_cols = [i for i in range(1, len(header)) if i != split_col]
    if task == "classification" and len(label_cols) != 1:
        raise format_error(path, f"{len(label_cols)} label columns for classification", "use one 'label'", 1)
    paths, raw, splits = [], [], []
    for n, row in enumerate(rows[1:], 2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise format_error(path, f"row has {len(row)} fields, the header {len(header)}", "fix the row", n)
        paths.append(base / row[0].strip())
        values = [row[i].strip() for i in label_cols]
        if task != "classification":
            try:
                nums = [float(v) for v in values]
            except ValueError:
                raise format_error(path, f"labels {values} are not numbers", f"{task} labels are numeric",
                                   n) from None
            if task == "multilabel" and any(v not in (0.0, 1.0) for v in nums):
                raise format_error(path, f"labels {values} are not 0/1", "multilabel columns hold 0 or 1", n)
            values = nums
        raw.append(values)
        splits.append(row[split_col].strip() if split_col is not None else "all")
    if not paths:
        raise format_error(path, "has no data rows", "add one row per image")
    bad = sorted(set(splits) - set(SPLITS) - {"all"})
    if bad:
        raise format_error(path, f"unknown split values {bad}", f"use {SPLITS}")
    check_images_exist(paths, path, f"image paths are relative to {base}")
    if task == "classification":
        values = [v[0] for v in raw]
        names = label_names or sorted(set(values), key=lambda v: (not v.lstrip("-").isdigit(),
                                                                  int(v) if v.lstrip("-").isdigit() else 0, v))
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise format_error(path, f"labels {unknown} are not in the given class names", "fix the names")
        index = {c: i for i, c in enumerate(names)}
        labels = np.asarray([index[v] for v in values], np.int64)
    else:
        names = label_names or [header[i] for i in label_cols]
        labels = np.asarray(raw, np.float32)
    out = {}
    split_arr = np.asarray(splits)
    for split in sorted(set(splits)):
        idx = np.flatnonzero(split_arr == split)
        out[split] = LabelledImages(f"{path.stem}/{split}", PathImages([paths[i] for i in idx]), labels[idx],
                                    task, list(names))
    return out
