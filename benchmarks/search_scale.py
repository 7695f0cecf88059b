"""Scale of face search: build time, memory, queries/s and recall@10 of facepcl's index against exact search.

Synthetic vectors (the numbers do not depend on what the vectors mean, only
on their count, length and clustering): ``N`` unit vectors of length 2048 in
clusters of 20 around random centres (like 20 photos per person; cosine to
the centre about 0.7; random-sign noise), stored as float16 in a memory-mapped file, as a saved
index holds them. Queries are fresh members of random clusters.

For each size, in a child process of its own (so peak memory is per size):
- exact: FAISS flat inner product, what facepcl uses below ``exact_below``
  rows (float32 copy of the vectors in memory); at sizes where that copy
  would not fit the memory budget, exact search streams the float16 file in
  blocks instead (marked "streamed"), which is also the recall reference;
- ivf: facepcl's approximate backend (FAISS IVF, float16 storage, default
  lists and nprobe), what facepcl uses from ``exact_below`` rows on.

Usage: python benchmarks/search_scale.py --sizes 10000,100000,1000000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from _bench import finish, machine, say, table

DIM = 2048
CLUSTER = 20
NOISE = 1.0  # noise norm relative to the unit centre: cosine member-centre ~ 1/sqrt(2)
FLAT_LIMIT_GB = 3.0  # above this float32 size, exact search streams from the float16 file


def synthesize(n: int, path: str, seed: int = 0, block: int = 50_000) -> np.memmap:
    """``n`` clustered unit vectors as a float16 ``.npy`` memory map (written block by block)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // CLUSTER), DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, DIM))
    for start in range(0, n, block):
        m = min(block, n - start)
        x = centres[rng.integers(0, len(centres), m)]
        # Rademacher (+-1) noise: as good as Gaussian in 2048 dimensions, and far cheaper to draw at 1M rows.
        signs = np.unpackbits(np.frombuffer(rng.bytes(m * DIM // 8), np.uint8)).reshape(m, DIM)
        x += (signs.astype(np.float32) * 2 - 1) * (NOISE / np.sqrt(DIM))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start:start + m] = x
    out.flush()
    queries = centres[rng.integers(0, len(centres), 200)]
    queries = queries + rng.standard_normal(queries.shape, dtype=np.float32) * (NOISE / np.sqrt(DIM))
    np.save(path + ".queries.npy", queries / np.linalg.norm(queries, axis=1, keepdims=True))
    return np.load(path, mmap_mode="r")


def streamed_exact(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """True top-k rows by streaming the vectors in float32 blocks through a FAISS flat index."""
    import faiss

    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.full((len(queries), k), -1, np.int64)
    for start in range(0, len(vectors), 100_000):
        flat = faiss.IndexFlatIP(DIM)
        flat.add(np.ascontiguousarray(vectors[start:start + 100_000], dtype=np.float32))
        s, i = flat.search(queries, k)
        s_all, i_all = np.concatenate([best_s, s], 1), np.concatenate([best_i, i + start], 1)
        order = np.argsort(-s_all, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s_all, order, 1), np.take_along_axis(i_all, order, 1)
    return best_i


def rate(fn, n: int) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def one_size(n: int, k: int, workdir: str) -> dict:
    """Measure one size (run in a child process)."""
    import faiss

    from facepcl.search._backend import Backend

    path = os.path.join(workdir, f"vectors-{n}.npy")
    t = time.perf_counter()
    vectors = synthesize(n, path)
    gen_s = time.perf_counter() - t
    queries = np.load(path + ".queries.npy").astype(np.float32)
    singles = queries[:50]
    rows = []
    flat_gb = n * DIM * 4 / 1e9
    if flat_gb <= FLAT_LIMIT_GB:
        t = time.perf_counter()
        exact = Backend(DIM, exact_below=n + 1)
        exact.build(vectors)
        build = time.perf_counter() - t
        truth = exact.search(queries, k)[1]
        qps = rate(lambda: exact.search(queries, k), len(queries))
        qps1 = rate(lambda: [exact.search(q[None], k) for q in singles], len(singles))
        rows.append({"n": n, "method": "exact (flat, float32)", "build_s": build, "index_gb": flat_gb,
                     "qps_batch": qps, "qps_single": qps1, "recall_at_10": 1.0})
        del exact
    else:
        t = time.perf_counter()
        truth = streamed_exact(vectors, queries, k)
        qps = len(queries) / (time.perf_counter() - t)
        rows.append({"n": n, "method": "exact (streamed from float16)", "build_s": 0.0, "index_gb": 0.0,
                     "qps_batch": qps, "qps_single": None, "recall_at_10": 1.0})
    t = time.perf_counter()
    ivf = Backend(DIM, exact_below=0)
    ivf.build(vectors)
    build = time.perf_counter() - t
    found = ivf.search(queries, k)[1]
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(truth, found, strict=True)]))
    qps = rate(lambda: ivf.search(queries, k), len(queries))
    qps1 = rate(lambda: [ivf.search(q[None], k) for q in singles], len(singles))
    ivf_gb = (faiss.serialize_index(ivf.index).nbytes) / 1e9
    rows.append({"n": n, "method": f"ivf (float16, {ivf.index.nlist} lists, nprobe {ivf.index.nprobe})",
                 "build_s": build, "index_gb": ivf_gb, "qps_batch": qps, "qps_single": qps1,
                 "recall_at_10": recall})
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux
    for r in rows:
        r["peak_rss_gb"] = peak_gb
        r["synth_s"] = gen_s
    return {"rows": rows}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated vector counts")
    p.add_argument("-k", type=int, default=10, help="neighbours (recall@k)")
    p.add_argument("--workdir", default=None, help="folder for the float16 vector files (default: a temporary one)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child process: one size
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(one_size(args.one, args.k, args.workdir)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        for n in (int(s) for s in args.sizes.split(",")):
            say(f"search_scale: {n} vectors ...")
            proc = subprocess.run([sys.executable, __file__, "--one", str(n), "-k", str(args.k), "--workdir", work],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"size {n} failed:\n{proc.stderr[-3000:]}")
            rows += json.loads(proc.stdout.strip().splitlines()[-1])["rows"]
            for f in os.listdir(work):
                os.unlink(os.path.join(work, f))
            for r in rows[-2:]:
                say(f"  {json.dumps(r)}")
    header = ["vectors", "method", "build s", "index GB", "queries/s (batch 200)", "queries/s (one by one)",
              "recall@10 vs exact", "peak RSS GB"]
    body = [[f"{r['n']:,}", r["method"], r["build_s"], r["index_gb"], r["qps_batch"],
             "-" if r["qps_single"] is None else r["qps_single"], f"{r['recall_at_10']:.3f}", r["peak_rss_gb"]]
            for r in rows]
    text = table(header, body)
    return finish(text, {"rows": rows, "machine": machine(), "dim": DIM, "cluster": CLUSTER, "noise": NOISE},
                  args.json, note=f"synthetic clustered vectors, {DIM} float32 values each")


if __name__ == "__main__":
    sys.exit(main())
