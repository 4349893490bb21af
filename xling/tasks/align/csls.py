"""Translation retrieval between two word-vector spaces: nearest neighbour and CSLS, chunked, and
bilingual lexicon induction (BLI) scores. Used by `xling.tasks.align`; usable on its own:

    space = Space(x @ W.T, y, csls_k=10)                      # mapped source, target (unit rows)
    scores, idx = space.s2t(query_rows, k=10, method="csls")  # top-10 targets of each query
    dico = build_dictionary(space, "S2T&T2S")                 # mutual CSLS neighbours (refinement)
    crit = mean_cosine(space)                                 # MUSE's unsupervised selection criterion
    p, _, _ = evaluate_bli(space, gold_pairs, "csls")         # {1: P@1, 5: P@5, 10: P@10}

CSLS(x, y) = 2 cos(Wx, y) - r_T(Wx) - r_S(y), with r the mean cosine of the k = 10 nearest
neighbours in the other space (Conneau et al. 2018). Scores are computed in row chunks with a
top-k per chunk, so 100k x 100k words need a few hundred MB, never the full similarity matrix.
"""

from __future__ import annotations

import numpy as np

from xling.errors import XlingError

# ---------------------------------------------------------------------------- retrieval: NN and CSLS

def _unit(x):
    import torch

    t = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32) if isinstance(x, np.ndarray) else x).float()
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-8)


# candidates kept from the bf16 pass beyond the k asked for, then rescored exactly in fp32
BF16_MARGIN = 16


def topk_scores(queries, keys, k: int, *, scale: float = 1.0, penalty=None, own_k: int = 0,
                memory_mb: int = 256, chunk_rows: int = 0, bf16: bool = True):
    """Top-k over keys of scale * (q . key) - penalty[key] for every query row, chunk by chunk.

    queries (n, d), keys (m, d) torch float32; penalty (m,) or None. Only a (chunk, m) block of
    scores exists at a time: chunk = `chunk_rows`, or memory_mb / (8 m) rows when 0 (the block and
    topk's workspace). With own_k > 0 the same pass also returns each query's mean plain similarity
    to its own_k nearest keys (CSLS's r of the queries), saving a second pass over the keys.
    With `bf16` the (chunk, m) block is computed in bfloat16 (about 3x faster on CPUs with bf16
    dot products), its top k + BF16_MARGIN candidates are rescored exactly in float32 and the
    best k of those returned: the values are fp32-exact, and a neighbour is missed only if more
    than BF16_MARGIN keys outrank it by bf16 rounding (~0.004 on a cosine).
    Returns (values (n, k), indices (n, k), r (n,) or None).
    """
    import torch

    n, m = queries.shape[0], keys.shape[0]
    k = min(k, m)
    bf16 = bf16 and m > 4 * (max(k, own_k) + BF16_MARGIN)  # small vocabularies: exact is as cheap
    rows = chunk_rows or max(1, (memory_mb << 20) // (8 * m))
    vals = torch.empty(n, k)
    idx = torch.empty(n, k, dtype=torch.long)
    r = torch.empty(n) if own_k else None
    kt = keys.T.contiguous()  # (d, m)
    if bf16:
        kt = kt.bfloat16()
        pen16 = None if penalty is None else penalty.bfloat16()
    with torch.no_grad():
        for s in range(0, n, rows):
            q = queries[s:s + rows]  # (c, d)
            if not bf16:
                scores = q @ kt  # (c, m)
                if own_k:
                    r[s:s + rows] = scores.topk(min(own_k, m), dim=1).values.mean(dim=1)
                if scale != 1.0:
                    scores.mul_(scale)
                if penalty is not None:
                    scores.sub_(penalty[None, :])
                vals[s:s + rows], idx[s:s + rows] = scores.topk(k, dim=1)
                continue
            approx = q.bfloat16() @ kt  # (c, m) bf16
            if own_k:
                cand = approx.topk(own_k + BF16_MARGIN, dim=1).indices  # (c, own_k + margin)
                r[s:s + rows] = _exact(q, keys, cand).topk(own_k, dim=1).values.mean(dim=1)
            if scale != 1.0:
                approx.mul_(scale)
            if pen16 is not None:
                approx.sub_(pen16[None, :])
            cand = approx.topk(k + BF16_MARGIN, dim=1).indices  # (c, k + margin)
            exact = scale * _exact(q, keys, cand)
            if penalty is not None:
                exact -= penalty[cand]
            v, j = exact.topk(k, dim=1)
            vals[s:s + rows], idx[s:s + rows] = v, cand.gather(1, j)
    return vals, idx, r


def _exact(q, keys, cand):
    """(c, j) fp32 dot products of each query row with its candidate keys cand (c, j)."""
    import torch

    return torch.einsum("cd,cjd->cj", q, keys[cand])


def mean_knn_sim(queries, keys, k: int, memory_mb: int = 256, chunk_rows: int = 0, bf16: bool = True):
    """(n,) mean cosine of each query's k nearest keys: CSLS's r (unit rows assumed)."""
    return topk_scores(queries, keys, k, memory_mb=memory_mb, chunk_rows=chunk_rows, bf16=bf16)[0].mean(dim=1)


class Space:
    """Mapped source and target vectors (unit rows) with NN / CSLS retrieval both ways.

    The hubness terms r_S (each mapped source word's mean cosine to its k nearest targets) and r_T
    (each target's to its k nearest mapped source words) are computed on first use and cached.
    """

    def __init__(self, src_mapped, tgt, csls_k: int = 10, memory_mb: int = 256, chunk_rows: int = 0,
                 bf16: bool = True):
        self.src = _unit(src_mapped)  # (n_s, d)
        self.tgt = _unit(tgt)  # (n_t, d)
        self.k = csls_k
        self.chunk = {"memory_mb": memory_mb, "chunk_rows": chunk_rows, "bf16": bf16}  # see topk_scores
        self._r = {}

    def r(self, side: str):
        """r_S ("src") or r_T ("tgt") of every row (computed once)."""
        if side not in self._r:
            q, other = (self.src, self.tgt) if side == "src" else (self.tgt, self.src)
            self._r[side] = mean_knn_sim(q, other, self.k, **self.chunk)
        return self._r[side]

    def s2t(self, ids, k: int = 10, method: str = "csls"):
        """Top-k targets of the mapped source words `ids`: (scores (q, k), indices (q, k)) numpy."""
        return self._search("src", ids, k, method)

    def t2s(self, ids, k: int = 10, method: str = "csls"):
        """Top-k mapped source words of the targets `ids`."""
        return self._search("tgt", ids, k, method)

    def _search(self, side: str, ids, k: int, method: str):
        import torch

        ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
        q, keys, other = (self.src, self.tgt, "tgt") if side == "src" else (self.tgt, self.src, "src")
        if method == "nn":
            v, i, _ = topk_scores(q[ids], keys, k, **self.chunk)
        elif method == "csls":
            # 2 cos(x, y) - r(y) ranks the keys; the query's own r comes from the same pass if not known
            known = side in self._r
            v, i, r_q = topk_scores(q[ids], keys, k, scale=2.0, penalty=self.r(other),
                                    own_k=0 if known else self.k, **self.chunk)
            v = v - (self._r[side][ids] if known else r_q)[:, None]
            if not known and len(ids) == len(q) and bool((ids == torch.arange(len(q))).all()):
                self._r[side] = r_q  # every row was a query: keep their r for searches the other way
        else:
            raise ValueError(f"retrieval method must be nn or csls, not {method!r}")
        return v.numpy(), i.numpy()


def csls_reference(src_mapped: np.ndarray, tgt: np.ndarray, k: int = 10) -> np.ndarray:
    """The full CSLS matrix (n_s, n_t) by brute force in numpy: for tests and small inputs only."""
    s = src_mapped / np.linalg.norm(src_mapped, axis=1, keepdims=True)
    t = tgt / np.linalg.norm(tgt, axis=1, keepdims=True)
    cos = s @ t.T  # (n_s, n_t)
    r_s = np.sort(cos, axis=1)[:, -k:].mean(axis=1)  # (n_s,) each source's k nearest targets
    r_t = np.sort(cos, axis=0)[-k:, :].mean(axis=0)  # (n_t,) each target's k nearest sources
    return 2 * cos - r_s[:, None] - r_t[None, :]


# ---------------------------------------------------------------------------- dictionaries from a mapping

def candidate_pairs(space: Space, direction: str = "s2t", method: str = "csls", max_rank: int = 15000,
                    max_size: int = 0) -> np.ndarray:
    """Best translation of each of the `max_rank` most frequent words, most confident first.

    Confidence = score of the best minus the second-best candidate (MUSE). Pairs whose translation
    is beyond `max_rank` are dropped; at most `max_size` pairs kept (0 = all). Returns (m, 2)
    (source row, target row) whatever the direction.
    """
    n = len(space.src) if direction == "s2t" else len(space.tgt)
    n_q = min(max_rank, n) if max_rank > 0 else n
    search = space.s2t if direction == "s2t" else space.t2s
    scores, idx = search(np.arange(n_q), 2, method)
    best = idx[:, 0]
    conf = scores[:, 0] - scores[:, 1] if scores.shape[1] > 1 else scores[:, 0]
    order = np.argsort(-conf, kind="stable")
    pairs = np.stack([np.arange(n_q), best], axis=1)[order]  # (n_q, 2) query, answer
    if max_rank > 0:
        pairs = pairs[pairs[:, 1] < max_rank]
    if max_size > 0:
        pairs = pairs[:max_size]
    return pairs if direction == "s2t" else pairs[:, ::-1].copy()


def build_dictionary(space: Space, build: str = "S2T&T2S", method: str = "csls",
                     max_rank: int = 15000) -> np.ndarray:
    """A dictionary induced from the mapping: S2T, T2S, their union (S2T|T2S) or mutual neighbours
    (S2T&T2S, refinement's default). (m, 2) source/target rows."""
    s2t = candidate_pairs(space, "s2t", method, max_rank)
    if build == "S2T":
        return s2t
    t2s = candidate_pairs(space, "t2s", method, max_rank)
    if build == "T2S":
        return t2s
    t2s_set = {tuple(p) for p in t2s.tolist()}
    if build == "S2T&T2S":
        keep = [p for p in s2t.tolist() if tuple(p) in t2s_set]
    elif build == "S2T|T2S":
        s2t_set = {tuple(p) for p in s2t.tolist()}
        keep = s2t.tolist() + [p for p in t2s.tolist() if tuple(p) not in s2t_set]
    else:
        raise ValueError(f"build must be S2T, T2S, S2T|T2S or S2T&T2S, not {build!r}")
    return np.array(keep, dtype=np.int64).reshape(-1, 2)


def mean_cosine(space: Space, max_rank: int = 10000, max_size: int = 10000) -> float:
    """MUSE's unsupervised model-selection criterion: mean cosine of the `max_size` most confident
    CSLS source->target pairs among the `max_rank` most frequent words."""
    pairs = candidate_pairs(space, "s2t", "csls", max_rank, max_size)
    if len(pairs) == 0:
        return 0.0
    s, t = space.src[pairs[:, 0]], space.tgt[pairs[:, 1]]
    return float((s * t).sum(dim=1).mean())


# ---------------------------------------------------------------------------- evaluation

def evaluate_bli(space: Space, pairs: np.ndarray, method: str = "csls",
                 ks: tuple[int, ...] = (1, 5, 10)) -> tuple[dict[int, float], np.ndarray, np.ndarray]:
    """Precision@k of bilingual lexicon induction on (source row, target row) gold pairs.

    Each distinct source word is one query; it counts as correct at k if any of its gold
    translations is among its top-k retrieved targets. Returns ({k: P@k}, query rows, correct@1).
    """
    if len(pairs) == 0:
        raise XlingError("the test dictionary is empty; widen align.test_ranks or give a larger dictionary")
    queries, inverse = np.unique(pairs[:, 0], return_inverse=True)
    _, idx = space.s2t(queries, max(ks), method)  # (q, K)
    gold = np.zeros(idx.shape, dtype=bool)
    for row, tgt in zip(inverse.ravel(), pairs[:, 1], strict=True):
        gold[row] |= idx[row] == tgt
    hit_by = np.cumsum(gold, axis=1) > 0  # (q, K): a gold translation within the first k
    return {k: float(hit_by[:, k - 1].mean()) for k in ks}, queries, hit_by[:, 0]


def frequency_bands(n: int) -> list[tuple[int, int]]:
    """Source-rank bands [lo, hi) for the P@1-by-frequency plot: 0-1k, 1k-2k, 2k-5k, 5k-10k, ... n."""
    edges = [e for e in (0, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000) if e < n] + [n]
    return list(zip(edges[:-1], edges[1:], strict=True))
