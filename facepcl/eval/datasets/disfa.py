"""DISFA action units: per-subject, per-AU intensity label files plus extracted frames.

Labels on disk (as distributed)::

    LABELS/SN001/SN001_au1.txt     one line per video frame: "frame,intensity"
    LABELS/SN001/SN001_au2.txt     (frame numbers from 1, intensity 0..5)
    ...

DISFA ships videos, not frames; frames must be extracted by the user. Their
names are given by ``frame_pattern``, a Python format string with
``{subject}`` and ``{frame}`` (default ``"{subject}/{frame}.jpg"``;
e.g. ``"{subject}/{frame:05d}.png"``), relative to the frames folder, with
``frame_offset`` added to the label file's frame number (``-1`` for frames
numbered from 0).

Protocol (the usual one for DISFA, e.g. in JAA-Net and the PCL follow-up):
the 8 AUs 1, 2, 4, 6, 9, 12, 25, 26; an AU is present when its intensity
is >= 2; F1 per AU and their mean; 3-fold subject-independent
cross-validation.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ._base import LabelledImages, PathImages, check_images_exist, format_error, require_dir

AUS = (1, 2, 4, 6, 9, 12, 25, 26)
THRESHOLD = 2
_SUBJECT = re.compile(r"SN\d{3}")


def read_disfa(labels_root: str | Path, frames_root: str | Path, *, frame_pattern: str = "{subject}/{frame}.jpg",
               frame_offset: int = 0, aus: tuple[int, ...] = AUS, threshold: int = THRESHOLD,
               subjects: list[str] | None = None) -> LabelledImages:
    """Read DISFA's AU intensity files and pair them with extracted frames.

    Args:
        labels_root: The ``ActionUnit_Labels`` folder (one ``SNxxx`` folder per subject).
        frames_root: Folder of extracted frames.
        frame_pattern: Frame path relative to ``frames_root`` (format string
            with ``subject`` and ``frame``).
        frame_offset: Added to the label file's frame number before formatting.
        aus: AU numbers to read, in output order.
        threshold: Intensity at or above which an AU counts as present.
        subjects: Only these subjects (default: every ``SNxxx`` folder).

    Returns:
        A multilabel set with labels ``(N, len(aus))`` float32 0/1 and
        ``groups`` = subject of each frame.
    """
    labels_root = require_dir(Path(labels_root), "DISFA label folder",
                              "point --data at DISFA's ActionUnit_Labels folder (SN001/SN001_au1.txt, ...)")
    frames_root = require_dir(Path(frames_root), "DISFA frame folder",
                              "extract the videos' frames and pass their folder with --frames")
    found = sorted(d.name for d in labels_root.iterdir() if d.is_dir() and _SUBJECT.fullmatch(d.name))
    if subjects is not None:
        absent = sorted(set(subjects) - set(found))
        if absent:
            raise format_error(labels_root, f"no label folders for subjects {absent}", "check the subject ids")
        found = [s for s in found if s in set(subjects)]
    if not found:
        raise format_error(labels_root, "holds no SNxxx subject folders", "point at ActionUnit_Labels")
    paths: list[Path] = []
    labels: list[np.ndarray] = []
    groups: list[str] = []
    for subject in found:
        frames, table = _read_subject(labels_root / subject, subject, aus)
        for frame, row in zip(frames, table, strict=True):
            try:
                rel = frame_pattern.format(subject=subject, frame=int(frame) + frame_offset)
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(f"frame_pattern {frame_pattern!r} cannot be formatted ({e}); use "
                                 "{subject} and {frame}, e.g. '{subject}/{frame:05d}.png'") from e
            paths.append(frames_root / rel)
            labels.append(row >= threshold)
            groups.append(subject)
    check_images_exist(paths, labels_root, f"extract every labelled frame into {frames_root} with names "
                       f"matching --frame-pattern {frame_pattern!r} (and --frame-offset)")
    return LabelledImages("disfa", PathImages(paths), np.asarray(labels, np.float32), "multilabel",
                          [f"AU{a}" for a in aus], groups=np.asarray(groups),
                          info={"threshold": threshold, "subjects": found})


def _read_subject(folder: Path, subject: str, aus: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    frames_ref: np.ndarray | None = None
    columns = []
    for au in aus:
        f = folder / f"{subject}_au{au}.txt"
        if not f.is_file():
            raise format_error(f, "AU label file does not exist", f"each subject folder needs "
                               f"{subject}_au<N>.txt for AUs {list(aus)}")
        frames, values = [], []
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit() or int(parts[1]) > 5:
                raise format_error(f, f"malformed line {line!r}", "expected 'frame,intensity' with intensity "
                                   "0..5", n)
            frames.append(int(parts[0]))
            values.append(int(parts[1]))
        if not frames:
            raise format_error(f, "file is empty", "use DISFA's label file")
        fr = np.asarray(frames)
        if frames_ref is None:
            frames_ref = fr
        elif len(fr) != len(frames_ref) or (fr != frames_ref).any():
            raise format_error(f, f"lists other frames than {subject}_au{aus[0]}.txt ({len(fr)} vs "
                               f"{len(frames_ref)} lines)", "all AU files of a subject must list the same frames")
        columns.append(values)
    assert frames_ref is not None
    return frames_ref, np.asarray(columns, dtype=np.int64).T


def subject_folds(groups: np.ndarray, n_folds: int = 3) -> np.ndarray:
    """Fold of each sample for subject-independent cross-validation.

    Subjects are sorted and cut into ``n_folds`` contiguous, nearly equal
    groups (DISFA's 27 subjects: 9 per fold).

    Returns:
        ``(N,)`` int64 fold index of each sample.
    """
    subjects = sorted(set(groups.tolist()))
    if len(subjects) < n_folds:
        raise ValueError(f"{len(subjects)} subjects cannot make {n_folds} subject-independent folds")
    fold_of = {s: i for i, chunk in enumerate(np.array_split(np.arange(len(subjects)), n_folds))
               for s in (subjects[j] for j in chunk)}
    return np.asarray([fold_of[g] for g in groups.tolist()], dtype=np.int64)
