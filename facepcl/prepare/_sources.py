"""What ``facepcl prepare`` reads: the INPUT arguments as a sorted list of sources, each one face track to make.

A source is one video file, or one folder of frame images (a video already
cut into frames), or one still image. Its output folder is
``OUT/identity/video``:

- an INPUT that is a video file or an image file: identity and video are its
  name without extension;
- an INPUT folder is walked; every video file below it, and every folder
  that holds image files, is a source. With ``rel`` its path relative to the
  INPUT folder (extension dropped), identity is the first component of
  ``rel`` and video the rest joined with ``-``; a source directly in the
  INPUT folder is its own identity. So VoxCeleb2 as downloaded
  (``dev/mp4/id00012/21Uxsk56VDQ/00001.mp4``, INPUT ``dev/mp4``) becomes
  ``OUT/id00012/21Uxsk56VDQ-00001/``, and VoxCeleb1 frames
  (``id10001/1zcIwhmdeo4/00001/*.jpg``) become
  ``OUT/id10001/1zcIwhmdeo4-00001/``.

Names starting with ``.`` or ``_`` are skipped; every listing is sorted, so
the list (and each rank's share of it) is the same on every run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from ..export import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS


@dataclass(frozen=True)
class Source:
    """One face track to make.

    Attributes:
        index: Position in the sorted list of all sources (all ranks alike).
        identity: Output identity folder name.
        video: Output video (track) folder name.
        kind: "video" (a video file), "frames" (a folder of frame images) or "image" (one still image).
        path: The video file, frame folder or image.
        frames: For "frames": the image file names in the folder, sorted.
        error: Why the source cannot be read, found while listing (None when fine).
    """

    index: int
    identity: str
    video: str
    kind: str
    path: str
    frames: tuple[str, ...] = ()
    error: str | None = None

    @property
    def key(self) -> str:
        """``identity/video``: the source's output folder relative to OUT."""
        return f"{self.identity}/{self.video}"


def _ext(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _walk(root: str, rel: tuple[str, ...], found: list[tuple[tuple[str, ...], str, str, tuple[str, ...], str | None]],
          seen: set[tuple[int, int]] | None = None):
    """Sources below ``root/rel`` in sorted order; each real folder once (symlink loops and repeats are skipped)."""
    folder = os.path.join(root, *rel)
    seen = set() if seen is None else seen
    try:
        st = os.stat(folder)
    except OSError:
        st = None
    if st is not None:
        if (st.st_dev, st.st_ino) in seen:
            return
        seen.add((st.st_dev, st.st_ino))
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        found.append((rel, "frames", folder, (), f"cannot list the folder ({e.strerror or e})"))
        return
    images = tuple(e.name for e in entries if not _hidden(e.name) and e.is_file() and _ext(e.name) in IMAGE_EXTENSIONS)
    if images:
        found.append((rel, "frames", folder, images, None))
    for e in entries:
        if _hidden(e.name):
            continue
        if e.is_dir():
            _walk(root, (*rel, e.name), found, seen)
        elif e.is_file() and _ext(e.name) in VIDEO_EXTENSIONS:
            found.append(((*rel, os.path.splitext(e.name)[0]), "video", e.path, (), None))


def _names(rel: tuple[str, ...], fallback: str) -> tuple[str, str]:
    if not rel:
        return fallback, fallback
    if len(rel) == 1:
        return rel[0], rel[0]
    return rel[0], "-".join(rel[1:])


def list_sources(inputs: Iterable[str | os.PathLike]) -> list[Source]:
    """The sources of the INPUT arguments, in order (inputs in the order given, each walked sorted).

    Args:
        inputs: Video files, image files and folders (see the module docstring).

    Returns:
        The sources; one that cannot be read is listed with its ``error``
        (recorded, not fatal). Raises nothing for bad paths.
    """
    out: list[Source] = []
    for arg in inputs:
        path = os.fspath(arg)
        stem = os.path.splitext(os.path.basename(os.path.normpath(path)))[0] or "input"
        if os.path.isdir(path):
            found: list = []
            _walk(path, (), found)
            base = os.path.basename(os.path.normpath(os.path.abspath(path))) or "input"
            for rel, kind, where, frames, error in found:
                identity, video = _names(rel, base)
                out.append(Source(len(out), identity, video, kind, where, frames, error))
        elif os.path.isfile(path) and _ext(path) in VIDEO_EXTENSIONS:
            out.append(Source(len(out), stem, stem, "video", path))
        elif os.path.isfile(path) and _ext(path) in IMAGE_EXTENSIONS:
            out.append(Source(len(out), stem, stem, "image", path))
        else:
            why = "no such file or folder" if not os.path.exists(path) else "neither a video, an image nor a folder"
            out.append(Source(len(out), stem, stem, "video", path, error=f"{why}; check the path"))
    return out


def shard(sources: list[Source], index: int, count: int) -> list[Source]:
    """The sources of shard ``index`` of ``count``: those with ``source.index % count == index``."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard index {index} of {count} is out of range (need 0 <= index < count)")
    return [s for s in sources if s.index % count == index]
