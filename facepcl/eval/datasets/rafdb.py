"""RAF-DB (basic emotion subset), aligned 100x100 images.

On-disk format (as distributed by the dataset's authors)::

    ROOT/EmoLabel/list_patition_label.txt   lines "train_00001.jpg 5" / "test_0001.jpg 7"
    ROOT/Image/aligned/train_00001_aligned.jpg

Labels 1..7 are Surprise, Fear, Disgust, Happiness, Sadness, Anger,
Neutral; they become class indices 0..6. The split is the file name's
prefix (``train_`` / ``test_``). The reference reads the same list and
image names (``<stem>_aligned.jpg``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._base import LabelledImages, PathImages, check_images_exist, format_error, require_dir, require_file

LABEL_NAMES = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
LIST_FILE = Path("EmoLabel") / "list_patition_label.txt"
IMAGE_DIR = Path("Image") / "aligned"


def read_rafdb(root: str | Path, *, list_file: str | Path | None = None,
               image_dir: str | Path | None = None) -> dict[str, LabelledImages]:
    """Read RAF-DB's basic-emotion list and aligned images.

    Args:
        root: The RAF-DB ``basic`` folder (holding ``EmoLabel/`` and ``Image/``).
        list_file: Label list (default ``ROOT/EmoLabel/list_patition_label.txt``).
        image_dir: Aligned images (default ``ROOT/Image/aligned``).

    Returns:
        ``{"train": ..., "test": ...}`` classification sets with 7 classes.

    Raises:
        DatasetFormatError: A file is missing or a line is malformed (the
            message names the file and line).
    """
    root = Path(root)
    lst = require_file(Path(list_file) if list_file else root / LIST_FILE, "RAF-DB label list",
                       f"point --data at the RAF-DB 'basic' folder that holds {LIST_FILE}")
    images = require_dir(Path(image_dir) if image_dir else root / IMAGE_DIR, "RAF-DB aligned image folder",
                         f"unpack RAF-DB's aligned images into {IMAGE_DIR} under the dataset folder")
    split: dict[str, tuple[list[Path], list[int]]] = {"train": ([], []), "test": ([], [])}
    for n, line in enumerate(lst.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= 7:
            raise format_error(lst, f"malformed line {line!r}", "expected '<name>.jpg <label 1-7>'", n)
        name = parts[0]
        which = "train" if name.startswith("train_") else "test" if name.startswith("test_") else None
        if which is None:
            raise format_error(lst, f"image name {name!r} starts with neither 'train_' nor 'test_'",
                               "use RAF-DB's own list file", n)
        split[which][0].append(images / f"{Path(name).stem}_aligned.jpg")
        split[which][1].append(int(parts[1]) - 1)
    out = {}
    for which, (paths, labels) in split.items():
        if not paths:
            raise format_error(lst, f"no {which} images listed", "use RAF-DB's complete list file")
        check_images_exist(paths, lst, f"the list names images missing from {images}")
        out[which] = LabelledImages(f"rafdb/{which}", PathImages(paths), np.asarray(labels, np.int64),
                                    "classification", list(LABEL_NAMES))
    return out
