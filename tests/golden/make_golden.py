"""Regenerate the golden data of ``tests/test_golden.py``: the example photos on the exact path.

Run it from the checkout whose results are the reference (a release), with
that checkout first on the path, e.g. for the release before the layout change::

    cd /path/to/old-checkout && PYTHONPATH=$PWD python /path/to/tests/golden/make_golden.py OUTDIR

OUTDIR defaults to this script's folder. It writes

- ``examples-exact.npz``: float32 (and int/str) arrays, no pickles:
  ``api_*`` the result of ``FaceEmbedder("pcl-demo", <exact path>)`` on
  ``examples/images/*.jpg`` (boxes, landmarks, scores, image index, face /
  pose / trunk codes); ``export_*`` the rows of ``facepcl embed
  examples/images -o OUT --exact`` read with pyarrow, in input order (the
  codes are not stored twice: the script checks they equal the API's bit for
  bit); ``nodetect_*`` the rows of ``facepcl embed astronaut.jpg
  grace_hopper.jpg -o OUT --exact --no-detect`` (whole images as crops).
- ``examples-exact.json``: what bit-for-bit equality needs (CPU flags, torch's
  CPU capability, the versions of torch, OpenCV (alignment), Pillow (JPEG
  decoding) and numpy, torch's thread count) and the
  facepcl commit and version that made the data.

Only calls that exist before and after the pipeline refactor are used; the
exact path is ``mode="exact"`` where ``FaceEmbedder`` has a ``mode``
argument, else ``exact=True`` (:func:`exact_embedder`), and ``--mode exact``
where ``facepcl embed`` has ``--mode``, else ``--exact`` (:func:`exact_cli_flags`).
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

#: torch threads for every golden computation: the count changes float reduction order.
THREADS = 2
#: the detector's and encoder's outputs compared; the export's other columns are compared too.
API_FIELDS = ("bbox", "kps", "det_score", "image_index", "face", "pose", "trunk")
CODES = ("face", "pose", "trunk")
NO_DETECT_IMAGES = ("astronaut.jpg", "grace_hopper.jpg")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8")


def cpu_flags() -> dict[str, bool]:
    """The CPU features that choose torch's kernels (from /proc/cpuinfo; all False where it is absent)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {name: name in flags for name in CPU_FLAGS}


def environment() -> dict:
    """What must match for results to be bit for bit the same."""
    import cv2
    import PIL
    import torch

    return {"cpu_flags": cpu_flags(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(), "torch": torch.__version__, "opencv": cv2.__version__,
            "pillow": PIL.__version__, "numpy": np.__version__, "threads": THREADS}


def exact_embedder(model: str = "pcl-demo", **kwargs):
    """``FaceEmbedder`` on the exact path, in whichever spelling this facepcl has."""
    import facepcl

    params = inspect.signature(facepcl.FaceEmbedder).parameters
    path = {"mode": "exact"} if "mode" in params else {"exact": True}
    return facepcl.FaceEmbedder(model, device="cpu", **path, **kwargs)


def exact_cli_flags() -> list[str]:
    """``facepcl embed``'s flags for the exact path: ``--mode exact`` where the command has ``--mode``, else
    ``--exact``. (Looked up by exact name: argparse would take ``--mode`` as an abbreviation of ``--model``.)"""
    import argparse

    from facepcl.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return ["--mode", "exact"] if "--mode" in commands.choices["embed"]._option_string_actions else ["--exact"]


def api_arrays(images: list[str]) -> dict[str, np.ndarray]:
    result = exact_embedder()(images)
    return {name: np.asarray(getattr(result, name)) for name in API_FIELDS}


def export_rows(inputs: list[str], out: str, *extra: str) -> dict[str, np.ndarray]:
    """Run ``facepcl embed ... --exact`` in this process and read its rows."""
    from facepcl.cli import main

    rc = main(["embed", *inputs, "-o", out, *exact_cli_flags(), "--device", "cpu", "-q", *extra])
    if rc != 0:
        raise RuntimeError(f"facepcl embed {inputs} {extra} exited with {rc}")
    return read_rows(out)


def read_rows(out: str) -> dict[str, np.ndarray]:
    """The rows of a ``facepcl embed`` output folder read with pyarrow, in input order, one array per column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    keys = [table.column(k).to_pylist() for k in ("item", "frame", "face_index")]
    order = sorted(range(table.num_rows), key=lambda i: tuple(k[i] for k in keys))
    arrays = {}
    for name in table.column_names:
        column = table.column(name).take(order)
        if name == "path":  # as given on the command line: keep the file name
            arrays[name] = np.array([Path(v).name for v in column.to_pylist()])
        elif pa.types.is_fixed_size_list(column.type):
            arrays[name] = np.array(column.to_pylist(), dtype=column.type.value_type.to_pandas_dtype())
        else:
            arrays[name] = column.to_numpy()
    return arrays


def golden_arrays(images_dir: Path, work: str) -> dict[str, np.ndarray]:
    images = sorted(str(p) for p in images_dir.glob("*.jpg"))
    data = {f"api_{k}": v for k, v in api_arrays(images).items()}
    export = export_rows([str(images_dir)], os.path.join(work, "export"))
    for code in CODES:
        if not np.array_equal(export[code], data[f"api_{code}"]):
            raise RuntimeError(f"the export's {code} codes differ from the API's: store them separately")
    data.update({f"export_{k}": v for k, v in export.items() if k not in CODES})
    crops = [str(images_dir / name) for name in NO_DETECT_IMAGES]
    data.update({f"nodetect_{k}": v for k, v in export_rows(crops, os.path.join(work, "crops"),
                                                                "--no-detect").items()})
    return data


def _commit(repo: Path) -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    import torch

    import facepcl

    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent
    repo = Path(facepcl.__file__).resolve().parent.parent
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory(prefix="facepcl-golden-") as work:
        data = golden_arrays(repo / "examples" / "images", work)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "examples-exact.npz", **data)
    meta = {"made_with": {**environment(), "facepcl": facepcl.__version__, "commit": _commit(repo)},
            "arrays": {k: f"{v.dtype} {v.shape}" for k, v in sorted(data.items())}}
    (out / "examples-exact.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out / 'examples-exact.npz'} ({len(data)} arrays) and {out / 'examples-exact.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
