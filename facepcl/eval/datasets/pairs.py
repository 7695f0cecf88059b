"""Face verification pair lists: LFW's ``pairs.txt`` and CPLFW/CALFW's ``pairs_*.txt``.

LFW (View 2) on disk::

    ROOT/pairs.txt        first line "10 300" (sets, matched pairs per set), then for each set
                          300 lines "name n1 n2" (matched) and 300 lines "name1 n1 name2 n2"
    ROOT/lfw/NAME/NAME_0001.jpg   (raw 250x250 images, or any aligned copy with the same names)

The folds are ``pairs.txt``'s 10 sets.

CPLFW (and CALFW) on disk::

    ROOT/pairs_CPLFW.txt  two lines per pair, "Name_1.jpg 1" / "Name_3.jpg 1" (1: same
                          person, 0: different); 6000 pairs, 10 consecutive folds of 600
                          (300 same then 300 different)
    ROOT/images/Name_1.jpg

The folds are 10 consecutive, equal blocks of pairs in file order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._base import PairList, PathImages, check_images_exist, format_error, require_dir, require_file, unique_paths


def read_lfw(root: str | Path, *, pairs_file: str | Path | None = None,
             image_dir: str | Path | None = None) -> PairList:
    """Read LFW's View-2 ``pairs.txt``.

    Args:
        root: Folder holding ``pairs.txt`` and the ``lfw/`` image folder.
        pairs_file: The pairs file (default ``ROOT/pairs.txt``).
        image_dir: Folder of per-person folders (default ``ROOT/lfw``, or
            ``ROOT`` itself when it has no ``lfw`` folder).

    Returns:
        A :class:`PairList` with ``folds`` = set index 0..9.
    """
    root = Path(root)
    pf = require_file(Path(pairs_file) if pairs_file else root / "pairs.txt", "LFW pairs file",
                      "point --data at the folder holding LFW's pairs.txt (View 2)")
    if image_dir is None:
        image_dir = root / "lfw" if (root / "lfw").is_dir() else root
    image_dir = require_dir(Path(image_dir), "LFW image folder", "unpack lfw.tgz next to pairs.txt")
    lines = [(n, ln.split()) for n, ln in enumerate(pf.read_text(encoding="utf-8").splitlines(), 1)
             if ln.strip()]
    if not lines:
        raise format_error(pf, "file is empty", "use LFW's pairs.txt")
    n0, head = lines[0]
    if len(head) != 2 or not all(h.isdigit() for h in head):
        raise format_error(pf, f"first line {' '.join(head)!r} is not '<sets> <pairs per set>'",
                           "use LFW's View-2 pairs.txt (first line '10 300')", n0)
    sets, per = int(head[0]), int(head[1])
    body = lines[1:]
    if len(body) != 2 * sets * per:
        raise format_error(pf, f"has {len(body)} pair lines, the header promises {sets} sets x {2 * per}",
                           "use the complete pairs.txt")

    def image(name: str, num: str, n: int) -> Path:
        if not num.isdigit():
            raise format_error(pf, f"image number {num!r} is not an integer", "fix the line", n)
        return image_dir / name / f"{name}_{int(num):04d}.jpg"

    paths, same, folds = [], [], []
    for i, (n, parts) in enumerate(body):
        fold, pos = divmod(i, 2 * per)
        matched = pos < per
        if matched and len(parts) == 3:
            paths.append((image(parts[0], parts[1], n), image(parts[0], parts[2], n)))
        elif not matched and len(parts) == 4:
            paths.append((image(parts[0], parts[1], n), image(parts[2], parts[3], n)))
        else:
            want = "'name n1 n2' (matched)" if matched else "'name1 n1 name2 n2' (mismatched)"
            raise format_error(pf, f"line {' '.join(parts)!r} of set {fold + 1} should be {want}",
                               "use LFW's pairs.txt unchanged", n)
        same.append(matched)
        folds.append(fold)
    return _pair_list("lfw", pf, paths, same, folds)


def read_cplfw(root: str | Path, *, pairs_file: str | Path | None = None,
               image_dir: str | Path | None = None, folds: int = 10, name: str = "cplfw") -> PairList:
    """Read CPLFW's (or CALFW's) two-lines-per-pair list.

    Args:
        root: Folder holding the pairs file and ``images/``.
        pairs_file: Default: the one ``pairs_*.txt`` in ``root``.
        image_dir: Default ``ROOT/images`` (or ``ROOT/aligned images``).
        folds: Number of consecutive equal folds (10).
        name: Dataset name for messages.
    """
    root = Path(root)
    if pairs_file is None:
        found = sorted(root.glob("pairs_*.txt")) if root.is_dir() else []
        if len(found) != 1:
            raise format_error(root, f"found {len(found)} pairs_*.txt files ({[f.name for f in found]})",
                               "pass the pairs file explicitly with --pairs-file")
        pairs_file = found[0]
    pf = require_file(Path(pairs_file), f"{name.upper()} pairs file", "pass the pairs_*.txt file")
    if image_dir is None:
        cands = [root / "images", root / "aligned images", root / "aligned_images"]
        image_dir = next((c for c in cands if c.is_dir()), cands[0])
    image_dir = require_dir(Path(image_dir), f"{name.upper()} image folder",
                            "unpack the dataset's images next to the pairs file (folder 'images')")
    lines = [(n, ln.split()) for n, ln in enumerate(pf.read_text(encoding="utf-8").splitlines(), 1)
             if ln.strip()]
    if not lines or len(lines) % 2:
        raise format_error(pf, f"has {len(lines)} non-empty lines", "expected two lines per pair")
    paths, same = [], []
    for (n1, a), (n2, b) in zip(lines[0::2], lines[1::2], strict=True):
        for n, parts in ((n1, a), (n2, b)):
            if len(parts) != 2 or parts[1] not in ("0", "1"):
                raise format_error(pf, f"line {' '.join(parts)!r} is not '<image> <0|1>'",
                                   "use the dataset's pairs file unchanged", n)
        if a[1] != b[1]:
            raise format_error(pf, f"the two lines of a pair disagree on the label ({a[1]} vs {b[1]})",
                               "each pair is two consecutive lines with the same 0/1 label", n2)
        paths.append((image_dir / a[0], image_dir / b[0]))
        same.append(a[1] == "1")
    if len(paths) % folds:
        raise format_error(pf, f"{len(paths)} pairs do not split into {folds} equal folds",
                           "use the complete pairs file")
    fold_of = np.repeat(np.arange(folds), len(paths) // folds)
    return _pair_list(name, pf, paths, same, fold_of.tolist())


def _pair_list(name: str, listed_in: Path, paths: list[tuple[Path, Path]], same: list[bool],
               folds: list[int]) -> PairList:
    flat = [p for pair in paths for p in pair]
    distinct, index = unique_paths(flat)
    check_images_exist(distinct, listed_in, "the pairs file names images that are not in the image folder")
    pairs = np.array([[index[a], index[b]] for a, b in paths], dtype=np.int64)
    return PairList(name, PathImages(distinct), pairs, np.asarray(same, bool), np.asarray(folds, np.int64))
