"""``facepcl embed`` to and from an object store, against local disk, through a local S3 server.

The same export (synthetic 64 px crops, ``--no-detect``, the bundled
pcl-demo model) runs in interleaved rounds as

- **local -> local**: input folder and output folder on local disk (the reference);
- **local -> S3**: the output is ``s3://bench/out-N`` on moto's S3 server on 127.0.0.1;
- **S3 -> S3**: the inputs are objects of ``s3://bench/in`` too;

and the cost of committing one shard (data, then manifest) is timed on its
own, to local disk and to the server. moto runs in this process (its
request handling shares the CPU with the export), so the S3 numbers are an
upper bound of what a real store's client side costs; network latency to a
real store adds to every request.

Usage::

    python benchmarks/object_store.py [--images 96] [--shard-size 32] [--shard-rows 512]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import tempfile
from pathlib import Path

import _bench
import numpy as np


def _server() -> str:
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_ENDPOINT_URL": endpoint,
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"})
    return endpoint


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=96, help="input crops (default 96)")
    p.add_argument("--shard-size", type=int, default=32, help="rows per shard of the export (default 32)")
    p.add_argument("--shard-rows", type=int, default=512, help="rows of the shard committed alone (default 512)")
    _bench.add_common_args(p)
    args = p.parse_args()
    import s3fs
    from PIL import Image

    from facepcl.export import EmbedOptions, read_embeddings, run_embed
    from facepcl.export._folder import ExportFolder
    from facepcl.export._formats import RowBuffer
    from facepcl.export._types import Cursor, Stats

    _bench.say("starting the local S3 server")
    _server()
    fs = s3fs.S3FileSystem()
    fs.mkdir("bench")
    work = Path(tempfile.mkdtemp(prefix="facepcl-bench-s3-"))
    crops = work / "in"
    crops.mkdir()
    rng = np.random.default_rng(0)
    for i in range(args.images):
        path = crops / f"c{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        fs.put_file(str(path), f"bench/in/{path.name}")
    counter = itertools.count()

    def export(inputs: str, out: str) -> None:
        opts = EmbedOptions(inputs=[inputs], out=out, model="pcl-demo", embedder={"detect": False, "device": "cpu"},
                            shard_size=args.shard_size, progress=False, quiet=True, num_workers=2)
        assert run_embed(opts) == 0

    def local() -> None:
        export(str(crops), str(work / f"out-{next(counter)}"))

    def to_s3() -> None:
        export(str(crops), f"s3://bench/out-{next(counter)}")

    def s3_to_s3() -> None:
        export("s3://bench/in", f"s3://bench/out-{next(counter)}")

    _bench.say(f"exporting {args.images} crops, {args.rounds} interleaved rounds")
    device = _bench.pick_device("cpu")
    secs = _bench.compare({"local -> local": local, "local -> S3": to_s3, "S3 -> S3": s3_to_s3}, device,
                          rounds=args.rounds, min_time=args.min_time, log=_bench.say)
    rows_out = read_embeddings(f"s3://bench/out-{next(counter) - 1}").num_rows
    assert rows_out == args.images, rows_out
    shards = -(-args.images // args.shard_size)
    base = secs["local -> local"]
    rows = [[name, s, args.images / s, s / base] for name, s in secs.items()]
    per_shard = (secs["local -> S3"] - base) / shards * 1e3
    per_input = (secs["S3 -> S3"] - secs["local -> S3"]) / args.images * 1e3

    # one shard alone: the commit (format write, hash, upload or rename, manifest)
    dim = 2048
    buf = RowBuffer(["face", "pose", "trunk"], dim)
    n = args.shard_rows
    buf.add({"item": np.arange(n), "path": [f"c{i}.png" for i in range(n)], "frame": np.full(n, -1),
             "timestamp": np.full(n, np.nan), "face_index": np.zeros(n), "width": np.full(n, 64),
             "height": np.full(n, 64), "bbox": rng.random((n, 4)), "kps": rng.random((n, 10)),
             "det_score": np.ones(n), **{f: rng.standard_normal((n, dim)).astype(np.float32)
                                         for f in ("face", "pose", "trunk")}})
    cols = buf.columns()

    def commit(out: str) -> None:
        folder = ExportFolder(out)
        folder.store.makedirs("_manifests")  # what lock() does first (the lock itself is not timed)
        folder.commit(0, cols, ["face", "pose", "trunk"], dim, {}, Cursor(), Cursor(n - 1, -1, True, "", ""),
                      Stats(inputs=n, faces=n), [])

    shard_secs = _bench.compare({"local disk": lambda: commit(str(work / f"shard-{next(counter)}")),
                                 "S3": lambda: commit(f"s3://bench/shard-{next(counter)}")}, device,
                                rounds=args.rounds, min_time=args.min_time, log=_bench.say)
    size = os.path.getsize(next(work.glob("shard-*/part-r00000-000000.parquet")))
    shard_rows = [[name, s * 1e3, size / s / 1e6, s / shard_secs["local disk"]] for name, s in shard_secs.items()]
    text = "\n\n".join([
        f"`facepcl embed` of {args.images} crops (`--no-detect`, pcl-demo, {shards} shards of {args.shard_size}), "
        "median of interleaved rounds (ratio: vs reference = local -> local):",
        _bench.table(["path", "seconds", "images/s", "vs reference"], rows),
        f"Writing to S3 adds {per_shard:.0f} ms per shard (local -> S3 against local -> local); reading the inputs "
        f"from S3 adds {per_input:.1f} ms per image (S3 -> S3 against local -> S3).",
        f"Committing one shard of {n} rows ({size / 1e6:.1f} MB Parquet, face+pose+trunk):",
        _bench.table(["to", "ms per shard", "MB/s", "vs reference"], shard_rows),
    ])
    info = _bench.machine()
    result = {"machine": info, "rows": [dict(zip(["path", "seconds", "images_per_s", "ratio"], r, strict=True))
                                        for r in rows],
              "extra_ms_per_shard": per_shard, "extra_ms_per_input": per_input,
              "shard": [dict(zip(["to", "ms", "mb_per_s", "ratio"], r, strict=True)) for r in shard_rows]}
    return _bench.finish(text, result, args.json,
                         note=f"CPU {info.get('cpu')} flags {','.join(info.get('cpu_flags') or [])}")


if __name__ == "__main__":
    raise SystemExit(main())
