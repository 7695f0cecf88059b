"""Pipeline overhead around the encoder: ``FaceEmbedder(detect=False)`` on decoded crops against the bare encoder.

64 in-memory 64 px uint8 RGB crops (nothing to decode), side by side in one
process, for the exact path and the default (fast) path:

- ``bare``: the encoder alone on a ready float32 batch (the exact path: the
  model's own module, NCHW; the fast path: the runtime ``encoder_runtime="auto"``
  picks, as :class:`facepcl.runtime._encoders.EncoderRuntime` runs it);
- ``pipeline``: ``FaceEmbedder(model, detect=False).embed(list_of_crops)``:
  conversion, normalisation, the encoder, result assembly, with the default
  decoding threads.

Target: pipeline >= 0.95x bare (overhead <= 5%; the issue allows 10%).

Usage::

    python benchmarks/crops.py
"""

from __future__ import annotations

import argparse
from typing import Any

import _bench
import numpy as np
import torch


def run(device: torch.device, batch: int = 64, size: int = 64, rounds: int = 3, min_time: float = 1.0) -> dict:
    from facepcl import PCLConfig, PCLModel
    from facepcl.pipeline import FaceEmbedder
    from facepcl.preprocess import crops_to_input

    torch.manual_seed(0)
    model = PCLModel(PCLConfig(name="random-benchmark")).eval().to(device)
    crops = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    listed = list(crops)
    rows = []
    for path, opts in (("exact", {"mode": "exact"}), ("default (fast)", {})):
        emb = FaceEmbedder(model, device=device, detect=False, batch_size=batch, **opts)
        x = crops_to_input(crops, emb.preprocess, device)
        _bench.say(f"crops: {path}")
        with torch.inference_mode():
            sec = _bench.compare({"bare": lambda emb=emb, x=x: emb._encoder(x),
                                  "pipeline": lambda emb=emb: emb.embed(listed)},
                                 device, rounds=rounds, min_time=min_time, warmup=2, log=_bench.say)
        rows.append({"path": path, "bare_images_per_s": batch / sec["bare"],
                     "pipeline_images_per_s": batch / sec["pipeline"], "ratio": sec["bare"] / sec["pipeline"],
                     "workers": emb.num_workers, "torch_threads": torch.get_num_threads()})
    return {"batch": batch, "size": size, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    rows = [[r["path"], r["bare_images_per_s"], r["pipeline_images_per_s"], f"{r['ratio']:.2f}x"]
            for r in result["rows"]]
    return _bench.table(["path", "bare encoder images/s", "FaceEmbedder(detect=False) images/s", "pipeline / bare"],
                        rows) + (f"\n\n{result['batch']} in-memory {result['size']} px uint8 crops per call; "
                                 f"{result['rows'][0]['workers']} decoding threads, "
                                 f"{result['rows'][0]['torch_threads']} torch threads.")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_args(p)
    p.add_argument("--batch", type=int, default=64)
    a = p.parse_args()
    device = _bench.pick_device(a.device)
    result = run(device, a.batch, 64, a.rounds, a.min_time)
    return _bench.finish(markdown(result), result, a.json)


if __name__ == "__main__":
    raise SystemExit(main())
