"""Approximate nearest neighbours for mining and retrieval at scale: a FAISS inverted-file index (IVF) over 8-bit
scalar-quantised vectors, built and searched a chunk at a time, its candidates re-scored exactly from the vectors.

    scores, idx = ivf_search(queries, docs, k=4)            # (Q, k) cosines and rows, best first
    scores, idx = ivf_search(queries, docs, k=4, nprobe=64)  # more lists visited: slower, closer to exact
    r = recall_at_k(idx[rows], exact_idx)                   # share of the exact top-k that was found

Used by `xling mine --backend ivf` and `xling retrieve --backend ivf`; needs `faiss` (`pip install 'xling[faiss]'`).

How (FAISS `IndexIVFScalarQuantizer`, inner product on unit vectors = cosine):
  1. nlist = 4 sqrt(N) centroids (at most N / 8) by k-means (10 iterations) on a sample of TRAIN_PER_LIST rows a
     list; each vector is stored in its nearest centroid's list as 8-bit codes of its residual: 1 byte a dimension
     (256 MB for 1M x 256, a quarter of float32). Vectors are added CHUNK rows at a time, so `docs` may be a
     memory-mapped .npy file (`read_vectors`) much larger than what is read at once.
  2. A query visits the `nprobe` lists of its nearest centroids and ranks their codes; the REFINE * k best
     candidates are re-scored with the exact float32 vectors (a gather of their rows) and the top k kept. The
     scores returned are therefore exact cosines; only the set of candidates is approximate.

Why IVF-SQ8 and not HNSW or a flat IVF (bench/mine_scale.py --compare, docs/measurements.md "Mining at scale"):
on 100k random-projection vectors (d 256) it built in 10 s against HNSW32's 16 s, reached recall@4 1.000 at
nprobe 8 after re-scoring (HNSW: 0.997 at efSearch 128, a third of the speed) and its index is 26 MB against
100 MB (IVF-Flat) and 124 MB (HNSW): those two keep float32 copies of every vector. Mining builds one index at a
time (target side, then source side), so 1M x 1M fits in a few GB beside the memory-mapped inputs.

nprobe is tuned (`tune_nprobe`): 8, 16, 32, ... until recall@k against exact search on TUNE_ROWS sampled queries
reaches RECALL_TARGET. Recall depends on the data: a fixed nprobe 16 gave recall@4 0.9998 on the bench's synthetic
vectors but 0.87 on 29k real verse vectors (F1 0.05 below exact); tuned to 0.98 it took nprobe 128 there (F1
0.006 below exact). `xling mine` prints the recall on other sampled rows.
"""

from __future__ import annotations

import math

import numpy as np

from xling.encode import as_matrix, check_dims
from xling.errors import XlingError

NPROBE_START = 8  # the first nprobe tried when tuning (doubled until the recall target is met)
RECALL_TARGET = 0.98  # recall@k the tuned nprobe must reach on the tuning sample (0.95 left F1 -0.011 on 29k real
# verse vectors, 0.98 -0.006: docs/measurements.md)
TUNE_ROWS = 1000  # queries searched exactly to tune nprobe
REFINE = 2  # candidates re-scored exactly per wanted neighbour (SQ8 codes misrank near-ties)
TRAIN_PER_LIST = 40  # k-means sample: rows per list (FAISS warns below 39)
NITER = 10  # k-means iterations (FAISS's default 25 took 2.5x as long for the same recall here)
CHUNK = 1 << 16  # rows added or read per step
GATHER_BYTES = 64 << 20  # bound on the (chunk, REFINE * k, D) candidate rows gathered for re-scoring


def import_faiss(backend: str):
    """The faiss module, or one XlingError that says how to install it (exact search needs nothing)."""
    try:
        import faiss
    except ImportError:
        raise XlingError(f"backend {backend} needs faiss: pip install 'xling[faiss]' (or pip install faiss-cpu); "
                         f"the exact backend works without it") from None
    return faiss


def default_nlist(n: int) -> int:
    """4 sqrt(N) inverted lists (FAISS's guideline), at most N / 8 so each list has rows to train on."""
    return max(1, min(round(4 * math.sqrt(n)), n // 8))


def _rows(x: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) as a contiguous float32 array (read from disk when x is memory-mapped)."""
    return np.ascontiguousarray(x[start:stop], dtype=np.float32)


def build_ivf(docs: np.ndarray, *, nlist: int | None = None, seed: int = 0):
    """A trained and filled faiss IndexIVFScalarQuantizer (8-bit, inner product) over the rows of `docs`."""
    faiss = import_faiss("ivf")
    n, d = docs.shape
    nlist = min(nlist or default_nlist(n), n)
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = NITER
    index.cp.seed = seed
    index.cp.min_points_per_centroid = 1  # small inputs: no FAISS warning on stderr (nlist <= N / 8 anyway)
    index.cp.max_points_per_centroid = TRAIN_PER_LIST  # FAISS samples no more than this
    sample = min(n, TRAIN_PER_LIST * nlist)
    rows = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))  # sorted: sequential reads
    index.train(np.ascontiguousarray(docs[rows], dtype=np.float32))
    for s in range(0, n, CHUNK):
        index.add(_rows(docs, s, s + CHUNK))
    return index


def _search(index, queries: np.ndarray, docs: np.ndarray, k: int, nprobe: int,
            refine: int) -> tuple[np.ndarray, np.ndarray]:
    """`index`'s top-k at `nprobe`, its REFINE * k candidates re-scored from `docs` (see ivf_search)."""
    nq = len(queries)
    scores = np.full((nq, k), -np.inf, dtype=np.float32)
    found = np.full((nq, k), -1, dtype=np.int64)
    index.nprobe = min(nprobe, index.nlist)
    kk = min(len(docs), k * max(refine, 1))  # candidates per query
    chunk = max(1, min(CHUNK, GATHER_BYTES // (kk * docs.shape[1] * 4)))
    for s in range(0, nq, chunk):
        q = _rows(queries, s, s + chunk)  # (c, D)
        _, cand = index.search(q, kk)  # (c, kk) rows by quantised score, -1 where none
        valid = cand >= 0
        vecs = np.asarray(docs[np.where(valid, cand, 0)], dtype=np.float32)  # (c, kk, D) exact rows
        sim = np.einsum("cd,ckd->ck", q, vecs)  # (c, kk) exact cosines
        sim[~valid] = -np.inf
        order = np.argsort(-sim, axis=1, kind="stable")[:, :k]  # best first
        scores[s:s + len(q)] = np.take_along_axis(sim, order, 1)
        found[s:s + len(q)] = np.where(np.take_along_axis(valid, order, 1), np.take_along_axis(cand, order, 1), -1)
    return scores, found


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """`size` distinct rows of n (all when size >= n), sorted: sequential reads from a memory-mapped file."""
    return np.sort(np.random.default_rng(seed).choice(n, min(size, n), replace=False))


def tune_nprobe(index, queries: np.ndarray, docs: np.ndarray, k: int, *, target: float = RECALL_TARGET,
                rows: int = TUNE_ROWS, refine: int = REFINE, seed: int = 0) -> tuple[int, float]:
    """(nprobe, its recall@k): the first of NPROBE_START, twice that, ... (up to every list) whose recall@k against
    exact search on `rows` sampled queries reaches `target`."""
    from xling.encode import nearest

    q = as_matrix(queries[sample_rows(len(queries), rows, seed)], "queries")
    _, exact = nearest(q, docs, k)
    nprobe = min(NPROBE_START, index.nlist)
    while True:
        recall = recall_at_k(_search(index, q, docs, k, nprobe, refine)[1], exact)
        if recall >= target or nprobe >= index.nlist:
            return nprobe, recall
        nprobe = min(2 * nprobe, index.nlist)


def ivf_search(queries: np.ndarray, docs: np.ndarray, k: int = 4, *, nprobe: int | None = None,
               target: float = RECALL_TARGET, nlist: int | None = None, refine: int = REFINE, seed: int = 0,
               index=None, info: dict | None = None, part: slice | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-k by cosine: (scores (Q, k) float32, rows (Q, k) int64), best first.

    nprobe None: tuned (`tune_nprobe`) to reach a recall@k of `target` on a sample of the queries. Scores are
    exact cosines of the rows found. A query whose visited lists hold fewer than k rows gets row -1 and score
    -inf in the missing places. `index`: one from `build_ivf(docs)`, to reuse. `info` (a dict) receives nlist,
    nprobe and, when tuned, the tuning sample's recall. `part`: search only queries[part] (Q = its rows), nprobe
    still tuned on a sample of all the queries, so the processes of a spread search agree on it.
    """
    if nprobe is not None and nprobe < 1:
        raise XlingError(f"nprobe must be >= 1, not {nprobe}")
    check_dims(queries, docs)
    k = min(k, len(docs))
    nq = len(range(len(queries))[part]) if part is not None else len(queries)
    if k < 1 or nq == 0:
        return np.full((nq, max(k, 0)), -np.inf, np.float32), np.full((nq, max(k, 0)), -1, np.int64)
    if index is None:
        index = build_ivf(docs, nlist=nlist, seed=seed)
    tuned = None
    if nprobe is None:
        nprobe, tuned = tune_nprobe(index, queries, docs, k, target=target, refine=refine, seed=seed)
    nprobe = min(nprobe, index.nlist)
    if info is not None:
        info.update(nlist=index.nlist, nprobe=nprobe, **({"tune_recall": tuned} if tuned is not None else {}))
    return _search(index, queries if part is None else queries[part], docs, k, nprobe, refine)


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean over rows of |approx top-k ∩ exact top-k| / k (FAISS's k-recall@k; 1.0 = the same neighbours)."""
    approx, exact = np.asarray(approx), np.asarray(exact)
    if approx.shape != exact.shape:
        raise ValueError(f"neighbour arrays of shapes {approx.shape} and {exact.shape}")
    return _hits(approx, exact) / exact.size if exact.size else 1.0


def _hits(approx: np.ndarray, exact: np.ndarray) -> int:
    """Neighbours of the exact top-k (Q, k) that the approximate top-k (Q, k) found, summed over rows."""
    return sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact, strict=True))


def sample_recall(queries: np.ndarray, docs: np.ndarray, approx_idx: np.ndarray, *, n: int = 1000,
                  seed: int = 1) -> float:
    """recall_at_k of `approx_idx` (all queries' approximate top-k in `docs`) against exact search, on `n` rows
    (seed 1: other rows than the tuning sample's, seed 0, where they can be)."""
    hits, rows = sample_hits(queries, docs, approx_idx, n=n, seed=seed)
    return hits / (rows * approx_idx.shape[1]) if rows else 1.0


def sample_hits(queries: np.ndarray, docs: np.ndarray, approx_idx: np.ndarray, *, n: int = 1000, seed: int = 1,
                part: slice | None = None) -> tuple[int, int]:
    """(neighbours found, rows checked) for `sample_recall`'s sample rows that fall in queries[part], whose
    approximate top-k are `approx_idx` (one row each of queries[part]): summed over the parts of a spread search,
    the sample's recall@k is hits / (rows * k), the same as one process computes."""
    from xling.encode import nearest

    start = 0 if part is None else range(len(queries))[part].start
    stop = len(queries) if part is None else start + len(approx_idx)
    rows = sample_rows(len(queries), n, seed)
    rows = rows[(rows >= start) & (rows < stop)]
    if not len(rows):
        return 0, 0
    _, exact = nearest(as_matrix(queries[rows], "queries"), docs, approx_idx.shape[1])
    return _hits(approx_idx[rows - start], exact), len(rows)
