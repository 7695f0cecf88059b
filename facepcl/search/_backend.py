"""The vector search itself, with FAISS: exact below a size threshold, inverted lists above it.

Vectors are L2-normalised, so the inner product is the cosine similarity
(the score every result reports). Below ``exact_below`` rows the search is
exhaustive (``IndexFlatIP``: the true top k). From ``exact_below`` rows on, an
inverted-file index with float16 storage (``IndexIVFScalarQuantizer``,
``QT_fp16``) scans only the ``nprobe`` lists nearest to the query: half the
memory of float32 and a fraction of the work (recall and the choice of FAISS:
docs/benchmarks.md, docs/search.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from ..errors import MissingExtraError

#: Row count from which the index is approximate (IVF) instead of exact.
EXACT_BELOW = 100_000
#: Rows used to train the IVF's k-means (a seeded sample when there are more).
TRAIN_ROWS_PER_LIST = 40
#: k-means iterations of the IVF training (fewer than FAISS's default of 25; recall at 10: docs/benchmarks.md).
KMEANS_ITERATIONS = 10


def _faiss():
    try:
        import faiss
    except ImportError as e:  # the [search] extra
        raise MissingExtraError('facepcl index and search need faiss, which the default install leaves out: '
                          'pip install "facepcl[search]"') from e
    return faiss


def normalize(x: np.ndarray) -> np.ndarray:
    """``(N, D)`` rows scaled to unit L2 norm, as float32 (zero rows stay zero; huge values do not overflow)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    peak = np.max(np.abs(x), axis=1, keepdims=True) if x.size else np.zeros((len(x), 1), np.float32)
    x = np.divide(x, peak, out=np.zeros_like(x), where=peak > 0)  # so the squares below stay finite
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def n_lists(n: int) -> int:
    """Inverted lists for ``n`` rows: about sqrt(n) (1000 at 1M), so k-means stays affordable on a CPU."""
    return max(16, round(math.sqrt(n)))


def default_nprobe(nlist: int) -> int:
    """Lists scanned per query: 1/8 of them, at least 16 (recall@10 against exact: docs/benchmarks.md)."""
    return min(nlist, max(16, nlist // 8))


def chunks(x: np.ndarray, size: int = 65536) -> Iterator[np.ndarray]:
    """``x`` (possibly a float16 memory map) in float32 row blocks, so memory stays bounded."""
    for start in range(0, len(x), size):
        yield np.ascontiguousarray(x[start:start + size], dtype=np.float32)


class Backend:
    """One feature's searchable index over an ``(N, D)`` matrix of unit vectors.

    Args:
        dim: Vector length D.
        exact_below: Exact search for fewer rows than this; IVF from here on.
        nprobe: Lists scanned per approximate query (None: :func:`default_nprobe`).
        seed: Seed of the k-means training sample.
    """

    def __init__(self, dim: int, *, exact_below: int = EXACT_BELOW, nprobe: int | None = None, seed: int = 0) -> None:
        self.dim = int(dim)
        self.exact_below = int(exact_below)
        self.nprobe = nprobe
        self.seed = seed
        self.index = None
        self.ntotal = 0

    @property
    def kind(self) -> str:
        """"exact" (flat, true top k) or "ivf" (approximate)."""
        if self.index is None:
            return "exact"
        return "ivf" if hasattr(self.index, "nprobe") else "exact"

    def build(self, vectors: np.ndarray) -> None:
        """(Re)build over all rows: flat below the threshold, else train an IVF on a sample and fill it."""
        faiss = _faiss()
        n = len(vectors)
        if n == 0 or n < self.exact_below:
            self.index = faiss.IndexFlatIP(self.dim)
        else:
            nlist = min(n_lists(n), n)  # k-means needs at least one row per list
            quantizer = faiss.IndexFlatIP(self.dim)
            self.index = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, nlist, faiss.ScalarQuantizer.QT_fp16,
                                                       faiss.METRIC_INNER_PRODUCT)
            self.index.cp.niter = KMEANS_ITERATIONS
            rng = np.random.default_rng(self.seed)
            take = min(n, nlist * TRAIN_ROWS_PER_LIST)
            sample = np.sort(rng.choice(n, size=take, replace=False))
            self.index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
            self.index.nprobe = self.nprobe or default_nprobe(nlist)
        self.ntotal = 0
        for block in chunks(vectors):
            self.index.add(block)
            self.ntotal += len(block)

    def extend(self, vectors: np.ndarray, new: np.ndarray) -> None:
        """Add the rows ``new`` (the last ones of ``vectors``, all rows so far).

        An IVF takes them into its trained lists; a flat index that grows past
        the threshold is rebuilt as an IVF over all rows.
        """
        if self.index is None or (self.kind == "exact" and len(vectors) >= self.exact_below):
            self.build(vectors)
            return
        for block in chunks(new):
            self.index.add(block)
            self.ntotal += len(block)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows for each query.

        Args:
            queries: ``(Q, D)`` vectors (normalised here).
            k: Neighbours per query.

        Returns:
            ``(scores, rows)``: ``(Q, k)`` float32 cosine similarities, best first,
            and ``(Q, k)`` int64 row numbers; -1 (score -inf) where there are fewer than k rows.
        """
        q = normalize(queries)
        if q.shape[1] != self.dim:
            raise ValueError(f"query vectors have length {q.shape[1]}, the index holds length {self.dim}")
        if self.index is None or self.ntotal == 0:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        scores, rows = self.index.search(q, k)
        scores = np.where(rows < 0, -np.inf, scores).astype(np.float32)
        return scores, rows.astype(np.int64)

    def write(self, path: str) -> None:
        """Save an IVF index (a flat one is rebuilt from the stored vectors instead)."""
        _faiss().write_index(self.index, path)

    def read(self, path: str) -> None:
        """Load an IVF index written by :meth:`write`."""
        self.index = _faiss().read_index(path)
        self.ntotal = int(self.index.ntotal)
        if self.nprobe:
            self.index.nprobe = self.nprobe
