"""BU-3DFE in the reference's list-file form.

BU-3DFE has no official train/test lists; the reference reads list files of
comma-separated lines ``image_path,label_a,label_b`` with paths relative
to an image root, and takes its label from the THIRD field (index 2) — the
one its code calls ``pose_label``. So the paper's BU-3DFE accuracy is a
classification of whatever that column holds. ``label_column`` picks the
field (2 reproduces the reference; 1 is the field the reference calls the
expression label). Labels are integers; they are used as class indices
after mapping the distinct values, sorted, onto 0..C-1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._base import LabelledImages, PathImages, check_images_exist, format_error, require_dir, require_file


def read_bu3dfe(root: str | Path, *, train_list: str | Path = "train_list.txt",
                test_list: str | Path = "test_list.txt", image_dir: str | Path | None = None,
                label_column: int = 2) -> dict[str, LabelledImages]:
    """Read BU-3DFE train/test list files.

    Args:
        root: Folder holding the list files (and, by default, the images).
        train_list: Train list, relative to ``root`` or absolute.
        test_list: Test list, relative to ``root`` or absolute.
        image_dir: Root the list's image paths are relative to (default ``root``).
        label_column: Which comma-separated field is the label (>= 1).

    Returns:
        ``{"train": ..., "test": ...}`` classification sets.
    """
    if label_column < 1:
        raise ValueError(f"label_column must be >= 1 (field 0 is the image path), got {label_column}")
    root = Path(root)
    image_dir = require_dir(Path(image_dir) if image_dir else root, "BU-3DFE image root",
                            "pass the folder the list's image paths are relative to with --images")
    raw = {}
    for split, lst in (("train", train_list), ("test", test_list)):
        lst = Path(lst) if Path(lst).is_absolute() else root / lst
        require_file(lst, f"BU-3DFE {split} list", "pass the list files (lines 'path,label,label')")
        paths, labels = [], []
        for n, line in enumerate(lst.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = [p.strip() for p in line.split(",")]
            if len(parts) <= label_column or not parts[label_column].lstrip("-").isdigit():
                raise format_error(lst, f"line {line!r} has no integer field {label_column}",
                                   "expected 'image_path,label,label' (comma-separated)", n)
            paths.append(image_dir / parts[0])
            labels.append(int(parts[label_column]))
        if not paths:
            raise format_error(lst, "lists no images", "use a non-empty list")
        check_images_exist(paths, lst, f"the list names images missing under {image_dir}")
        raw[split] = (paths, labels)
    classes = sorted(set(raw["train"][1]) | set(raw["test"][1]))
    index = {c: i for i, c in enumerate(classes)}
    return {split: LabelledImages(f"bu3dfe/{split}", PathImages(paths),
                                  np.asarray([index[v] for v in labels], np.int64), "classification",
                                  [str(c) for c in classes], info={"label_column": label_column})
            for split, (paths, labels) in raw.items()}
