"""Golden results: the example photos on the exact path, the same as the release that made ``tests/golden``.

``tests/golden/make_golden.py``, run in the reference checkout (the release
before the pipeline refactor, 8ab4c39), embedded ``examples/images/*.jpg``
with the bundled ``pcl-demo`` model on the exact path (``FaceEmbedder(mode="exact")``
or ``exact=True``, ``facepcl embed --mode exact`` or ``--exact``, whichever
this version has, and ``--no-detect`` on two whole images as crops)
and stored boxes, landmarks, scores, the face / pose / trunk codes and the
export's rows. This test computes the same here and compares.

Bit for bit holds only where the kernels and decoders are the same: the same
CPU features (and torch's choice of kernels), torch, OpenCV, Pillow and numpy
versions, and torch's thread count (set here to the recorded one). When they
all match the recorded ones every array must be identical to the bit;
otherwise the arrays are compared at the tolerances below (measured spread
between thread counts and AVX2 / AVX-512 kernels: 6e-5 px, codes 3e-5), and
each assertion message says which comparison ran and why.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import facepcl
from facepcl.cli import main
from facepcl.export import read_metadata
from tests._threads import torch_threads
from tests.golden.make_golden import (
    API_FIELDS,
    CODES,
    NO_DETECT_IMAGES,
    environment,
    exact_cli_flags,
    exact_embedder,
    read_rows,
)

GOLDEN = Path(__file__).resolve().parent / "golden"
IMAGES = Path(__file__).resolve().parent.parent / "examples" / "images"
MADE_WITH = json.loads((GOLDEN / "examples-exact.json").read_text(encoding="utf-8"))["made_with"]
#: what must equal the recorded environment for bit-for-bit equality
BIT_KEYS = ("cpu_flags", "torch_cpu_capability", "machine", "torch", "opencv", "pillow", "numpy")
#: absolute tolerances where the environment differs: pixels for boxes and landmarks, else the value's unit
TOLERANCE = {"bbox": 1e-3, "kps": 1e-3, "det_score": 1e-5, "face": 1e-3, "pose": 1e-3, "trunk": 1e-3}


def _differences() -> dict[str, tuple]:
    here = environment()
    return {k: (here[k], MADE_WITH[k]) for k in BIT_KEYS if here[k] != MADE_WITH[k]}


DIFFERENCES = _differences()
EXACT = not DIFFERENCES


def assert_golden(actual, expected: np.ndarray, name: str) -> None:
    """``actual`` equals the golden ``expected``: bit for bit in the golden's environment, else within TOLERANCE."""
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape}, golden {expected.shape}"
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype}, golden {expected.dtype}"
    field = name.split("_", 1)[1]
    if EXACT or expected.dtype.kind not in "f" or field not in TOLERANCE:
        why = ("compared bit for bit: same CPU kind and library versions as the golden data" if EXACT else
               f"compared exactly although this environment differs from the golden's ({DIFFERENCES}): "
               "integers, strings and NaN placeholders do not depend on float kernels")
        np.testing.assert_array_equal(actual, expected, err_msg=f"{name}: {why}")
        if expected.dtype.kind == "f":  # also -0.0 against 0.0 and NaN payloads
            bits = np.dtype(f"u{expected.dtype.itemsize}")
            assert np.array_equal(actual.view(bits), expected.view(bits)), f"{name}: {why}, but the bits differ"
        return
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOLERANCE[field], equal_nan=True,
                               err_msg=f"{name}: compared at tolerance {TOLERANCE[field]}, not bit for bit, because "
                                       f"this environment differs from the golden's (here, golden): {DIFFERENCES}")


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN / "examples-exact.npz", allow_pickle=False) as data:
        return dict(data)


@pytest.fixture(scope="module")
def threads():
    with torch_threads(MADE_WITH["threads"]):
        yield


@pytest.fixture(scope="module")
def api_result(threads):
    """One model load: pcl-demo on the exact path over the example photos."""
    embedder = exact_embedder("pcl-demo")  # FaceEmbedder(mode="exact"), or exact=True where there is no mode
    assert isinstance(embedder, facepcl.FaceEmbedder)
    return embedder(sorted(str(p) for p in IMAGES.glob("*.jpg")))


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, threads) -> Path:
    out = tmp_path_factory.mktemp("golden") / "export"
    assert main(["embed", str(IMAGES), "-o", str(out), *exact_cli_flags(), "--device", "cpu", "-q"]) == 0
    return out


def test_the_golden_data_is_what_make_golden_records(golden):
    recorded = json.loads((GOLDEN / "examples-exact.json").read_text(encoding="utf-8"))["arrays"]
    assert {k: f"{v.dtype} {v.shape}" for k, v in golden.items()} == recorded
    assert set(BIT_KEYS) <= set(MADE_WITH)
    assert len(golden["api_face"]) == 4  # astronaut, grace_hopper and the pair's two faces


def test_api_exact_path_matches_golden(api_result, golden):
    assert api_result.failures == []
    assert api_result.info["accel"]["exact"] is True
    for field in API_FIELDS:
        assert_golden(getattr(api_result, field), golden[f"api_{field}"], f"api_{field}")


def assert_rows_golden(rows: dict, golden, prefix: str, what: str) -> None:
    """Every golden column named ``prefix + column`` is in ``rows`` and matches."""
    expected = {k.removeprefix(prefix): v for k, v in golden.items() if k.startswith(prefix)}
    missing = set(expected) - set(rows)
    assert not missing, f"{what} lost columns {sorted(missing)}"
    for column, value in expected.items():
        assert_golden(rows[column], value, f"{prefix}{column}")


def test_export_exact_rows_match_golden(export_dir, golden):
    assert read_metadata(export_dir)["accel"]["exact"] is True
    rows = read_rows(str(export_dir))
    assert_rows_golden(rows, golden, "export_", "the export")
    for code in CODES:  # the export computes the API's codes (make_golden checked it in the reference)
        assert_golden(rows[code], golden[f"api_{code}"], f"export_{code}")


def test_export_no_detect_rows_match_golden(tmp_path, golden, threads):
    crops = [str(IMAGES / name) for name in NO_DETECT_IMAGES]  # whole images as aligned crops: resized
    out = tmp_path / "crops"
    assert main(["embed", *crops, "-o", str(out), *exact_cli_flags(), "--no-detect", "--device", "cpu", "-q"]) == 0
    assert_rows_golden(read_rows(str(out)), golden, "nodetect_", "the --no-detect export")


def test_golden_comparison_detects_a_one_ulp_change(golden):
    """The comparison itself fails on the smallest change where it compares bit for bit, and beyond tolerance."""
    face = golden["api_face"].copy()
    face[0, 0] = np.nextafter(face[0, 0], np.float32(np.inf)) if EXACT else face[0, 0] + 10 * TOLERANCE["face"]
    with pytest.raises(AssertionError, match="bit for bit" if EXACT else "tolerance"):
        assert_golden(face, golden["api_face"], "api_face")
