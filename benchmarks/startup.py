"""Start-up to the first detection in a fresh process: facepcl's own RetinaFace against facexlib's network.

Every process that embeds (the ``facepcl`` command, each ``torchrun`` rank,
each Ray actor, ``facepcl serve``) pays its start-up once. In interleaved
rounds, each in a new Python process, this times ``import`` + building the
bundled detector + one detection of a 64 x 64 image:

- ``facepcl``: :class:`facepcl.FaceDetector` as it is (its own network and NMS; no torchvision);
- ``facexlib``: the same network built from ``facexlib.detection.retinaface.RetinaFace`` with
  ``torchvision.ops.nms`` (what facepcl did before it had its own, and what a hand-written loop imports).

Both load the same weights; the median of ``--rounds`` processes is reported.

Usage::

    python benchmarks/startup.py --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

import _bench

_FACEPCL = """
import time
t = time.perf_counter()
import numpy as np
from facepcl.detection import FaceDetector
FaceDetector(device="cpu").detect(np.zeros((64, 64, 3), np.uint8))
print(time.perf_counter() - t)
"""

_FACEXLIB = """
import time
t = time.perf_counter()
import warnings
import numpy as np
import torch
from facexlib.detection.retinaface import RetinaFace
from safetensors.torch import load_file
from torchvision.ops import nms
from facepcl._utils.paths import BUNDLED_WEIGHTS
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    net = RetinaFace(network_name="mobile0.25", device=torch.device("cpu")).eval()
net.load_state_dict(load_file(str(BUNDLED_WEIGHTS / "retinaface_mobile0.25.safetensors")))
with torch.no_grad():
    loc, conf, _ = net(torch.zeros(1, 3, 64, 64))
nms(loc[0], conf[0, :, 1], 0.4)
print(time.perf_counter() - t)
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    cases = {"facepcl": _FACEPCL, "facexlib": _FACEXLIB}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):
        for name, code in cases.items():
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600)
            times[name].append(float(out.stdout.strip().splitlines()[-1]))
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [[k, med[k], med["facexlib"] / med[k]] for k in cases]
    text = _bench.table(["start-up to the first detection", "median s", "facexlib / this"], rows)
    return _bench.finish(text, {"machine": _bench.machine(), "seconds": times, "median": med}, args.json,
                         note=f"{args.rounds} fresh processes each")


if __name__ == "__main__":
    raise SystemExit(main())
