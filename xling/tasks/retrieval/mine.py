"""Bitext mining with LASER's ratio margin: find the translation pairs hidden in two piles of sentences.

    found = mine(src_vecs, tgt_vecs, k=4, mode="intersection", threshold=1.0)   # Mined(src, tgt, score)
    result = mine_eval(src_vecs, tgt_vecs, gold)       # precision / recall / F1 against known pairs
    result = mine_eval_run("runs/demo", "en", "fr")     # the same on the run's held-out test verses

CLI: `xling mine en.txt fr.txt --run runs/demo --src en --tgt fr [--mode intersection] [--threshold 1.0]
[--backend ivf]` writes TSV lines `score  src_id  tgt_id  src  tgt` (ids = line numbers), best first. Inputs may also be
PREFIX.npy vectors from `xling embed`. `torchrun --nproc-per-node N -m xling -- mine ...` spreads the search over N
processes (`mine(distributed=True)`) and writes the same pairs.

Score (Artetxe & Schwenk 2019, "Margin-based parallel corpus mining"; LASER's mine_bitexts, BUCC):

    margin(x, y) = cos(x, y) / ( sum_{z in NN_k(x)} cos(x, z) / 2k  +  sum_{z in NN_k(y)} cos(y, z) / 2k )

NN_k(x) = the k nearest target sentences of source x by cosine, NN_k(y) = the k nearest source sentences of
target y; k = 4. Dividing by the neighbourhood's mean cosine discounts "hubs" that are close to everything.
Modes: forward = each source sentence with its best target by margin; backward = each target with its best
source; intersection = the pairs both directions agree on (mutual best). A pair is kept when its margin is
>= threshold.

Backends (`backend=`, `xling mine --backend`):
  exact  (default) NN_k by exact chunked search; the best candidate is the argmax of the margin over *all*
         sentences of the other side (computed in chunks, bounded memory), where LASER rescored only the k
         cosine neighbours: the two agree unless the margin-best sentence is not among the k cosine-nearest, and
         ours is then the true argmax of the score. O(N M) products.
  faiss  LASER's own procedure (mine_bitexts with a flat FAISS index): NN_k exact, the best candidate is the
         margin-best of the k neighbours.
  ivf    the same on approximate neighbours (`ann.ivf_search`: FAISS IVF, 8-bit codes, candidates re-scored
         exactly): the neighbourhood means and the candidates both come from the k neighbours found, as when
         LASER mines with an approximate index. One index at a time is built (target side, then source side),
         from inputs that may be memory-mapped .npy files; each index's nprobe is tuned until recall@k against
         exact search on a sample reaches `ann.RECALL_TARGET` (0.98), and `recall_sample` other rows per
         direction are checked the same way, the recall@k going into `Mined.info`.

Evaluation (`mine_eval`, the demo's `mining.f1.<src>-<tgt>`): the held-out test verses of two languages, the
target side shuffled with a fixed seed; the truth is the shared verse key. Precision = correct / mined,
recall = correct / gold pairs, F1 their harmonic mean.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch.distributed as dist

from xling.encode import MAX_BYTES, as_matrix, nearest
from xling.errors import XlingError
from xling.evaluate import EvalContext, evaluation, skipped
from xling.langs import pivot_lang

MODES = ("forward", "backward", "intersection")
BACKENDS = ("exact", "faiss", "ivf")
RECALL_SAMPLE = 1000  # rows per direction whose approximate neighbours `xling mine` checks against exact search
K = 4  # neighbourhood size of the margin (LASER, BUCC)
THRESHOLD = 1.0  # default margin: a pair's cosine must reach its neighbourhoods' mean (raise it for noisy piles)
EPS = 1e-6  # floor of the margin's denominator (a neighbourhood mean cosine <= 0 would flip the sign)


@dataclass
class Mined:
    src: np.ndarray  # (P,) int64 row of each mined pair in the source vectors
    tgt: np.ndarray  # (P,) int64 row in the target vectors
    score: np.ndarray  # (P,) float32 margin, sorted best first
    info: dict = field(default_factory=dict)  # backend settings; recall@k against exact search (approximate)

    def __len__(self) -> int:
        return len(self.src)


def knn_mean(x: np.ndarray, y: np.ndarray, k: int = K) -> np.ndarray:
    """(N,) mean cosine of each row of x with its k nearest rows of y (k capped at len(y))."""
    scores, _ = nearest(x, y, k)
    return scores.mean(1)


def margin_matrix(x: np.ndarray, y: np.ndarray, k: int = K) -> np.ndarray:
    """The full (N, M) ratio-margin matrix (for small inputs and tests; `mine` never builds it)."""
    x, y = as_matrix(x, "source vectors"), as_matrix(y, "target vectors")
    rx, ry = knn_mean(x, y, k), knn_mean(y, x, k)
    return (x @ y.T) / np.maximum((rx[:, None] + ry[None, :]) / 2, EPS)


def best_by_margin(x: np.ndarray, y: np.ndarray, rx: np.ndarray, ry: np.ndarray, *,
                   max_bytes: int = MAX_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """For each row of x: (index of the row of y with the highest margin (N,), that margin (N,)).

    rx, ry: the neighbourhood mean cosines (`knn_mean`) of x and of y. Chunked over x: the (c, M) block of
    scores is the only large array.
    """
    n, m = len(x), len(y)
    chunk = max(1, min(n, max_bytes // (4 * max(m, 1))))
    best = np.empty(n, dtype=np.int64)
    score = np.empty(n, dtype=np.float32)
    half_ry = ry[None, :] / 2
    for s in range(0, n, chunk):
        sim = x[s:s + chunk] @ y.T  # (c, M) cosines
        sim /= np.maximum(rx[s:s + chunk, None] / 2 + half_ry, EPS)  # -> margins, in place
        j = sim.argmax(1)
        best[s:s + chunk] = j
        score[s:s + chunk] = sim[np.arange(len(j)), j]
    return best, score


def best_of_neighbours(scores: np.ndarray, index: np.ndarray, rx: np.ndarray,
                       ry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LASER's candidate rule: for each row of x, the margin-best of its k neighbours in y (row -1: none).

    scores, index: (N, k) cosines and rows of x's neighbours in y; rx (N,), ry (M,): neighbourhood means.
    Returns (best row of y (N,), its margin (N,)); a row of x with no neighbour gets -1 and -inf.
    """
    valid = index >= 0
    safe = np.where(valid, index, 0)
    margin = scores / np.maximum((rx[:, None] + ry[safe]) / 2, EPS)  # (N, k)
    margin[~valid] = -np.inf
    j = margin.argmax(1)
    rows = np.arange(len(index))
    return index[rows, j], margin[rows, j].astype(np.float32)


def neighbourhoods(x: np.ndarray, y: np.ndarray, k: int, backend: str, *, part: slice, nprobe: int | None,
                   target: float, nlist: int | None, seed: int, info: dict) -> tuple[np.ndarray, np.ndarray]:
    """(scores (n, k), rows (n, k)): the k nearest rows of y for each row of x[part] by the backend's search
    (ivf: its nlist, nprobe and tuning recall into `info`; nprobe tuned on a sample of all of x)."""
    from xling.tasks.retrieval.ann import ivf_search
    from xling.tasks.retrieval.retrieve import faiss_search

    if backend == "faiss":
        return faiss_search(x[part], y, k)
    return ivf_search(x, y, k, nprobe=nprobe, target=target, nlist=nlist, seed=seed, info=info, part=part)


def _share(n: int, rank: int, world: int) -> slice:
    """Rows [n rank / world, n (rank + 1) / world): one process's part of n rows."""
    return slice(n * rank // world, n * (rank + 1) // world)


def _mean_valid(scores: np.ndarray) -> np.ndarray:
    """(N,) mean of each row's finite scores (the neighbours found); nan for a row with none."""
    ok = np.isfinite(scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, scores, 0).sum(1) / ok.sum(1)


def mine(src: np.ndarray, tgt: np.ndarray, *, k: int = K, mode: str = "intersection",
         threshold: float = THRESHOLD, backend: str = "exact", nprobe: int | None = None,
         recall_target: float | None = None, nlist: int | None = None, recall_sample: int = 0,
         seed: int = 0, distributed: bool = False) -> Mined:
    """Mine translation pairs between L2-normalised source (N, D) and target (M, D) vectors.

    backend: "exact", "faiss" or "ivf" (module docstring). ivf: nlist (default `ann.default_nlist`), nprobe
    (default: tuned per direction until the recall@k on a sample of rows reaches `recall_target`, default
    `ann.RECALL_TARGET`); recall_sample: this many other rows per direction are searched exactly too and the
    recall@k of the neighbours goes into `Mined.info`. src and tgt may be memory-mapped arrays: every backend
    reads them a block of rows at a time.

    distributed: every process of the initialised torch.distributed group calls mine with the same inputs; each
    searches the neighbours and best candidates of its share of the rows of both sides (an ivf index is built in
    each, from the same rows and seed), the shares are exchanged, and every process returns what one process
    would (`torchrun ... -m xling -- mine`).
    """
    from xling import distributed as xdist
    from xling.tasks.retrieval.ann import RECALL_TARGET, sample_hits

    if mode not in MODES:
        raise XlingError(f"unknown mining mode {mode!r}; choose from {', '.join(MODES)}")
    if backend not in BACKENDS:
        raise XlingError(f"unknown mining backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if k < 1:
        raise XlingError(f"k must be >= 1, not {k}")
    if nprobe is not None and nprobe < 1:
        raise XlingError(f"nprobe must be >= 1, not {nprobe}")
    target = RECALL_TARGET if recall_target is None else recall_target
    if not 0 < target <= 1:
        raise XlingError(f"the recall target must be in (0, 1], not {target}")
    x, y = as_matrix(src, "source vectors"), as_matrix(tgt, "target vectors")
    if x.shape[1] != y.shape[1]:
        raise XlingError(f"source vectors have dimension {x.shape[1]} but target vectors {y.shape[1]}; "
                         f"embed both with the same model (and layer)")
    info: dict = {"backend": backend, "k": min(k, len(x), len(y))}
    if not len(x) or not len(y):
        empty = np.empty(0, np.int64)
        return Mined(empty, empty, np.empty(0, np.float32), info)
    rank, world = (xdist.rank(), xdist.world_size()) if distributed else (0, 1)
    sx, sy = _share(len(x), rank, world), _share(len(y), rank, world)  # this process's rows of each side

    def joined(*parts: np.ndarray) -> list[np.ndarray]:
        """Each array of this process's share, joined with the other processes' in rank order."""
        if world == 1:
            return list(parts)
        every = xdist.all_gather_objects(parts)
        return [np.concatenate([p[i] for p in every]) for i in range(len(parts))]

    none = np.empty(0, np.int64), np.empty(0, np.float32)
    fwd, fwd_score = bwd, bwd_score = none  # a direction the mode does not need stays empty
    if backend == "exact":
        rx, ry = joined(knn_mean(x[sx], y, k), knn_mean(y[sy], x, k))
        if mode != "backward":
            fwd, fwd_score = best_by_margin(x[sx], y, rx[sx], ry)  # source i -> target fwd[i]
        if mode != "forward":
            bwd, bwd_score = best_by_margin(y[sy], x, ry[sy], rx)  # target j -> source bwd[j]
    else:
        opts = {"nprobe": nprobe, "target": target, "nlist": nlist, "seed": seed}
        info["src_tgt"], info["tgt_src"] = {}, {}  # ivf: each index's nlist, nprobe, tuning recall
        xs, xi = neighbourhoods(x, y, k, backend, part=sx, info=info["src_tgt"], **opts)  # NN_k(x) in y
        ys, yi = neighbourhoods(y, x, k, backend, part=sy, info=info["tgt_src"], **opts)  # NN_k(y) in x
        if backend == "faiss":
            del info["src_tgt"], info["tgt_src"]
        rx, ry = joined(_mean_valid(xs), _mean_valid(ys))
        fwd, fwd_score = best_of_neighbours(xs, xi, rx[sx], ry)
        bwd, bwd_score = best_of_neighbours(ys, yi, ry[sy], rx)
        if recall_sample > 0 and backend == "ivf":
            t0 = time.perf_counter()
            info["recall_sample"] = min(recall_sample, len(x)), min(recall_sample, len(y))
            hits = np.array([*sample_hits(x, y, xi, n=recall_sample, seed=seed + 1, part=sx),  # not the tuning
                             *sample_hits(y, x, yi, n=recall_sample, seed=seed + 1, part=sy)])  # rows
            found, rows, back_found, back_rows = np.sum(xdist.all_gather_objects(hits), axis=0)
            info["recall_src_tgt"] = found / max(rows * xi.shape[1], 1)
            info["recall_tgt_src"] = back_found / max(back_rows * yi.shape[1], 1)
            info["recall_seconds"] = time.perf_counter() - t0  # the exact check, not part of mining
    fwd, fwd_score, bwd, bwd_score = joined(fwd, fwd_score, bwd, bwd_score)
    if mode == "forward":
        i, j, s = np.arange(len(x)), fwd, fwd_score
    elif mode == "backward":
        i, j, s = bwd, np.arange(len(y)), bwd_score
    else:
        ok = fwd >= 0
        i = np.flatnonzero(ok)
        i = i[bwd[fwd[i]] == i]  # mutual best: i -> j and j -> i
        j, s = fwd[i], fwd_score[i]
    keep = (s >= threshold) & (i >= 0) & (j >= 0)
    i, j, s = i[keep], j[keep], s[keep]
    order = np.lexsort((j, i, -s))  # best first; ties by source then target row
    return Mined(i[order].astype(np.int64), j[order].astype(np.int64), s[order].astype(np.float32), info)


# ---------------------------------------------------------------------------- evaluation

def gold_pairs(src_keys: list[str], tgt_keys: list[str]) -> np.ndarray:
    """(G, 2) rows (i, j) with src_keys[i] == tgt_keys[j]: the true translation pairs."""
    where = {key: j for j, key in enumerate(tgt_keys)}
    rows = [(i, where[key]) for i, key in enumerate(src_keys) if key in where]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def mine_eval(src: np.ndarray, tgt: np.ndarray, gold: np.ndarray, *, k: int = K, mode: str = "intersection",
              threshold: float = THRESHOLD, seed: int = 0, **backend) -> dict:
    """Precision / recall / F1 of mining src against a shuffled tgt, gold = (G, 2) true (src row, tgt row).

    The target rows are permuted with `seed` before mining and mapped back after, so the answer cannot
    come from the order of the rows. `backend`: mine's backend, nprobe, nlist, recall_sample.
    """
    perm = np.random.default_rng(seed).permutation(len(tgt))  # shuffled row r = original row perm[r]
    found = mine(src, np.asarray(tgt)[perm], k=k, mode=mode, threshold=threshold, **backend)
    mined = set(zip(found.src.tolist(), perm[found.tgt].tolist(), strict=True))
    truth = set(map(tuple, np.asarray(gold).tolist()))
    correct = len(mined & truth)
    p = correct / len(mined) if mined else 0.0
    r = correct / len(truth) if truth else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "mined": len(mined), "gold": len(truth), "correct": correct,
            "mode": mode, "threshold": threshold, "k": k, **found.info}


def _split_segments(shards, split: str, lang: str, cap: int) -> list[np.ndarray]:
    n = min(shards.num_segments(split, lang), cap)
    return [np.asarray(shards.segment(split, lang, i), np.int64) for i in range(n)]


def run_split_vectors(run: str | Path, langs: list[str], *, split: str = "test", layer: int | None = None,
                      pool_specials: bool | None = None,
                      max_segments: int = 1000) -> tuple[dict[str, np.ndarray], dict[str, list[str]], int, bool]:
    """Sentence vectors and verse keys of a run's held-out segments (the first `max_segments` of each language):
    ({lang: (N, D)}, {lang: keys}, layer, pool_specials)."""
    from xling.encode import POOL_SPECIALS, encode
    from xling.shards import Shards
    from xling.tasks.retrieval.retrieve import load_encoder, resolve_layer

    model, _ = load_encoder(run)
    shards = Shards(Path(run) / "shards")
    for lg in langs:
        if lg not in shards.langs:
            raise XlingError(f"language {lg!r} is not in {run}; choose from {', '.join(shards.langs)}")
    layer = resolve_layer(run, model, layer)
    pool = POOL_SPECIALS if pool_specials is None else pool_specials
    vecs, keys = {}, {}
    for lg in langs:
        seqs = _split_segments(shards, split, lg, max_segments)
        vecs[lg] = encode(model, seqs, lang_index=shards.langs.index(lg), tag=shards.lang_token_ids[lg],
                          specials=shards.specials, layer=layer, pool_specials=pool, desc=f"encode {lg}")
        keys[lg] = shards.keys(split, lg)[: len(seqs)]
    return vecs, keys, layer, pool


def mine_eval_run(run: str | Path, src: str, tgt: str, *, split: str = "test", layer: int | None = None,
                  pool_specials: bool | None = None, max_segments: int = 1000, **kw) -> dict:
    """`mine_eval` on a run's held-out verses of two languages (the first `max_segments` of each)."""
    vecs, keys, layer, pool = run_split_vectors(run, list(dict.fromkeys([src, tgt])), split=split, layer=layer,
                                                pool_specials=pool_specials, max_segments=max_segments)
    out = mine_eval(vecs[src], vecs[tgt], gold_pairs(keys[src], keys[tgt]), **kw)
    return {**out, "layer": layer, "pool_specials": pool, "split": split}


@evaluation("mining", order=45)
def eval_mining(ctx: EvalContext) -> dict:
    """Mining F1 of the pivot language against every other on the test split (vectors cached by retrieval)."""
    from xling.encode import POOL_SPECIALS, encode
    from xling.evaluate import split_vectors
    from xling.tasks.retrieval.retrieve import default_layer

    pivot = pivot_lang(ctx.langs)
    others = [lg for lg in ctx.langs if lg != pivot]
    if not others:
        return skipped("one language: no bitext to mine", "Bitext mining")
    n_states = ctx.model.cfg.n_layer + 1
    layer = ctx.cache.get("retrieval_layer", default_layer(ctx.run_dir)) % n_states

    def vectors(lg: str) -> np.ndarray:
        if POOL_SPECIALS:  # what the retrieval evaluation encoded (all layers): reuse it
            return split_vectors(ctx, "test", lg)[layer]
        key = ("vectors-nospecials", "test", lg, layer)
        if key not in ctx.cache:
            ctx.cache[key] = encode(ctx.model, ctx.segments("test", lg), lang_index=ctx.langs.index(lg),
                                    tag=ctx.shards.lang_token_ids[lg], specials=ctx.shards.specials,
                                    layer=layer, pool_specials=False, desc=f"encode test {lg}")
        return ctx.cache[key]

    src = vectors(pivot)
    src_keys = ctx.shards.keys("test", pivot)[: len(src)]
    metrics, rows = {}, []
    for lg in others:
        tgt = vectors(lg)
        res = mine_eval(src, tgt, gold_pairs(src_keys, ctx.shards.keys("test", lg)[: len(tgt)]))
        metrics[f"mining.f1.{pivot}-{lg}"] = res["f1"]
        rows.append([f"{pivot}-{lg}", res["precision"], res["recall"], res["f1"], res["mined"], res["gold"]])
    f1s = [r[3] for r in rows]
    metrics["mining.f1_mean"] = float(np.mean(f1s))
    metrics["mining.items"] = int(sum(r[5] for r in rows))  # gold pairs behind the mean (the headline's rule)
    return {"metrics": metrics, "sections": [{"title": "Bitext mining", "blocks": [
        {"kind": "text", "text": f"LASER ratio margin (k = {K}), {MODES[2]} of forward and backward best matches, "
                                 f"margin >= {THRESHOLD}: the test verses of {pivot} against each language's test "
                                 f"verses in shuffled order; a mined pair is correct when both verses share their "
                                 f"key (mean F1 {metrics['mining.f1_mean']:.3f}; sentence vectors of layer {layer}, "
                                 f"specials {'pooled' if POOL_SPECIALS else 'not pooled'}). "
                                 f"{ctx.provenance('test', len(src))}."},
        {"kind": "table", "header": ["pair", "precision", "recall", "F1", "mined", "gold pairs"], "rows": rows},
        {"kind": "bar", "name": "mining_f1", "labels": [r[0] for r in rows], "values": f1s, "ylabel": "F1",
         "title": "Bitext mining F1, test split"},
    ]}]}


# ---------------------------------------------------------------------------- command

def run_mine(model_dir: str | Path, src_file: str | Path, tgt_file: str | Path, *, src: str | None = None,
             tgt: str | None = None, k: int = K, mode: str = "intersection", threshold: float = THRESHOLD,
             out: str | Path | None = None, layer: int | None = None, pool_specials: bool | None = None,
             backend: str = "exact", nprobe: int | None = None, recall_target: float | None = None,
             recall_sample: int = RECALL_SAMPLE) -> Mined:
    """`xling mine`: aligned pairs `score  src_id  tgt_id  src  tgt` (TSV with a header), best first.

    PREFIX.npy inputs are memory-mapped (`read_vectors`); returns what `mine` found (its `info` for the summary).
    Under torchrun every process searches its share of the rows (`mine(distributed=True)`) and rank 0 writes the
    pairs; give vectors from `xling embed` (text inputs are embedded whole by every process).
    """
    from xling import distributed as xdist
    from xling.tasks.retrieval.retrieve import InputFile, emit, resolve_languages, side_vectors, tsv_cell

    if mode not in MODES:
        raise XlingError(f"unknown mining mode {mode!r}; choose from {', '.join(MODES)}")
    if backend not in BACKENDS:
        raise XlingError(f"unknown mining backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if k < 1:
        raise XlingError(f"-k must be >= 1, not {k}")
    if nprobe is not None and nprobe < 1:
        raise XlingError(f"--nprobe must be >= 1, not {nprobe}")
    if recall_sample < 0:
        raise XlingError(f"--recall-sample must be >= 0, not {recall_sample}")
    if recall_target is not None and not 0 < recall_target <= 1:
        raise XlingError(f"--recall-target must be in (0, 1], not {recall_target}")
    if backend != "exact":
        from xling.tasks.retrieval.ann import import_faiss

        import_faiss(backend)  # before any model is loaded or text embedded
    sides = [InputFile(src_file, "source"), InputFile(tgt_file, "target")]
    langs = resolve_languages(model_dir, sides, [src, tgt], ["--src", "--tgt"])
    sv, tv = side_vectors(model_dir, sides, langs, layer=layer, pool_specials=pool_specials)
    joined = not dist.is_initialized()
    info = xdist.init_distributed(device="cpu")  # every process reads the inputs; errors so far are everyone's
    try:
        found = mine(sv, tv, k=k, mode=mode, threshold=threshold, backend=backend, nprobe=nprobe,
                     recall_target=recall_target, recall_sample=recall_sample, distributed=info.distributed)
        error = None
        if info.is_main:
            s, t = sides
            lines = ["score\tsrc_id\ttgt_id\tsrc\ttgt"]
            lines += [f"{sc:.6f}\t{s.ids[i]}\t{t.ids[j]}\t{tsv_cell(s.text(i))}\t{tsv_cell(t.text(j))}"
                      for i, j, sc in zip(found.src.tolist(), found.tgt.tolist(), found.score.tolist(), strict=True)]
            try:
                emit(lines, out)
            except XlingError as e:
                error = str(e)
            except OSError as e:  # said to every process before raising: they wait for rank 0's word
                error = f"cannot write {out}: {e.strerror or e}; free space or choose another --out"
        error = xdist.broadcast_object(error)
        xdist.barrier()  # every process has rank 0's word before any leaves the group
        if error:
            raise XlingError(error)
        return found
    finally:
        if joined:
            xdist.destroy()


def summary(found: Mined) -> list[str]:
    """The lines `xling mine` prints on stderr: pairs, backend, and an approximate backend's settings and recall."""
    info = found.info
    line = f"mine: {len(found):,} pairs (backend {info.get('backend', 'exact')}"
    for way, name in (("src_tgt", "source->target"), ("tgt_src", "target->source")):
        if info.get(way):
            d = info[way]
            tuned = f", tuned: recall {d['tune_recall']:.3f} on its sample" if "tune_recall" in d else ""
            line += f"; {name} nlist {d['nlist']:,}, nprobe {d['nprobe']}{tuned}"
    lines = [line + ")"]
    if "recall_src_tgt" in info:
        k, (ns, nt) = info["k"], info["recall_sample"]
        r1, r2 = info["recall_src_tgt"], info["recall_tgt_src"]
        lines.append(f"mine: recall@{k} of the approximate neighbours against exact search: source->target "
                     f"{r1:.3f} ({ns:,} sampled rows), target->source {r2:.3f} ({nt:,})")
        if min(r1, r2) < 0.95:
            lines.append(f"warning: recall@{k} below 0.95: raise --recall-target or --nprobe, or use --backend exact")
    return lines
