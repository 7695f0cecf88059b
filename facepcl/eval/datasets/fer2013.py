"""FER-2013: the Kaggle ``fer2013.csv`` of 48x48 grayscale pixel strings.

On-disk format: a CSV with header ``emotion,pixels,Usage``; ``emotion`` is
0..6 (Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral), ``pixels`` 2304
space-separated integers 0..255 (row-major 48x48), ``Usage`` one of
``Training``, ``PublicTest`` and ``PrivateTest``. Splits: Training is
``train``, PublicTest the dataset's own validation split ``val``,
PrivateTest ``test`` (the split results are usually reported on).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ._base import ArrayImages, LabelledImages, files_key, format_error, require_file

LABEL_NAMES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SIDE = 48


def read_fer2013(path: str | Path) -> dict[str, LabelledImages]:
    """Read ``fer2013.csv`` (or a folder holding it).

    Returns:
        ``{"train", "val", "test"}`` classification sets (7 classes) of 48x48
        grayscale images.

    Raises:
        DatasetFormatError: Missing file, wrong header, or a malformed row
            (named by line number).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "fer2013.csv"
    require_file(path, "FER-2013 csv", "pass the Kaggle fer2013.csv (or the folder holding it)")
    rows: dict[str, tuple[list[np.ndarray], list[int], list[int]]] = {s: ([], [], []) for s in USAGE.values()}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["emotion", "pixels", "Usage"]:
            raise format_error(path, f"header is {header!r}", "expected the Kaggle header 'emotion,pixels,Usage'",
                               1)
        for n, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) < 3:
                raise format_error(path, f"row has {len(row)} fields", "expected emotion,pixels,Usage", n)
            emotion, pixels, usage = row[0].strip(), row[1], row[2].strip()
            if not emotion.isdigit() or int(emotion) > 6:
                raise format_error(path, f"emotion {emotion!r} is not an integer 0-6", "fix or drop the row", n)
            if usage not in USAGE:
                raise format_error(path, f"Usage {usage!r} is not one of {sorted(USAGE)}", "fix the row", n)
            try:
                values = np.array(pixels.split(), dtype=np.int64)
            except ValueError:
                raise format_error(path, "pixels are not space-separated integers", "fix the row", n) from None
            if values.size != SIDE * SIDE or values.min(initial=0) < 0 or values.max(initial=0) > 255:
                raise format_error(path, f"pixels hold {values.size} values (range {values.min(initial=0)}.."
                                   f"{values.max(initial=0)})", f"expected {SIDE * SIDE} values in 0..255", n)
            bucket = rows[USAGE[usage]]
            bucket[0].append(values.astype(np.uint8).reshape(SIDE, SIDE))
            bucket[1].append(int(emotion))
            bucket[2].append(n)
    key = files_key([path])
    out = {}
    for split, (imgs, labels, lines) in rows.items():
        if not imgs:
            continue
        src = ArrayImages(np.stack(imgs), "L", f"{path.name} line", key, np.asarray(lines))
        out[split] = LabelledImages(f"fer2013/{split}", src, np.asarray(labels, np.int64), "classification",
                                    list(LABEL_NAMES))
    if "train" not in out or "test" not in out:
        raise format_error(path, f"splits present: {sorted(out)}", "the csv needs Training and PrivateTest rows")
    return out
