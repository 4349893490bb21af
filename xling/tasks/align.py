"""Cross-lingual word-embedding alignment (MUSE, vecmap): map source vectors into the target space.

    W = procrustes(X[train[:, 0]], Y[train[:, 1]])          # supervised, from a seed dictionary
    W, log = adversarial(X, Y, cfg)        # unsupervised (MUSE; xling.tasks.adversarial), then refine(...)
    space = Space(X @ W.T, Y)                                 # mapped source, target; unit vectors
    scores, idx = space.s2t(query_ids, k=10, method="csls")  # translations, chunked: bounded memory
    result = run_align(src_vecs, tgt_vecs, "runs/demo/align/en-fr", pairs=..., cfg=AlignConfig())

CLI: `xling align --src en.vec --tgt fr.vec --dict freedict` (`align_files`) or, inside a run,
`align_from_corpus` (static vectors trained on the corpus, FreeDict/CLDR dictionaries), which also
gives the demo's metrics `align.p_at_1.<src>-<tgt>.{supervised,unsupervised}`.

Methods (AlignConfig.methods):
  procrustes          W = U V^T from the SVD of Y_d^T X_d over the training dictionary
  procrustes-refine   the same, then refinement (below)
  adversarial         MUSE's GAN: a discriminator tells mapped source from target vectors, the
                      mapping learns to fool it and is kept orthogonal; then refinement. `adv_restarts`
                      runs (seeds seed, seed + 1, ...); the best refined criterion wins
  identical           seed dictionary = strings present in both vocabularies; then refinement
Refinement: `refine_iters` times, build a dictionary of mutual CSLS nearest neighbours among the
`refine_max_rank` most frequent words and solve Procrustes on it. Every candidate mapping is scored
without any dictionary by MUSE's criterion (mean cosine of the 10k most confident CSLS pairs) and
the best one is kept. Both compute CSLS among the `csls_vocab` most frequent words of each side
(vecmap's cutoff): 50k x 300 words, Procrustes + 5 refinements take ~55 s on 2 cores.
P@k is measured on a test dictionary split off by source frequency rank (bands fitted to the source
vocabulary unless given: `rank_bands`), beside the trivial copy-the-word baseline (`copy_baseline`).

Retrieval (NN, CSLS: `xling.tasks.csls`) is chunked: 100k x 100k words fit in a few hundred MB.
The demo report's evaluation is `xling.tasks.align_eval`.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from xling.errors import XlingError
from xling.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from xling.langs import check_lang
from xling.progress import format_table
from xling.tasks.adversarial import adversarial, orthogonalize, synthetic_pair
from xling.tasks.csls import (  # retrieval lives there; re-exported here (tests, bench)
    Space,
    build_dictionary,
    candidate_pairs,
    csls_reference,
    evaluate_bli,
    frequency_bands,
    mean_cosine,
    mean_knn_sim,
    topk_scores,
)
from xling.tasks.dictionaries import (
    coverage_line,
    dictionary_pairs,
    filter_pairs,
    identical_pairs,
    load_dictionary,
    split_by_rank,
)
from xling.tasks.vectors import Vectors, VectorsConfig, corpus_vectors, read_vec, write_vec

METHODS = ("procrustes", "procrustes-refine", "adversarial", "identical")
SUPERVISED = ("procrustes", "procrustes-refine")
NORM_STEPS = ("center", "renorm", "none", "")


@dataclass
class AlignConfig:
    methods: list[str] = field(default_factory=lambda: ["procrustes", "procrustes-refine", "adversarial",
                                                        "identical"])  # which mappings to learn
    normalize: str = "renorm,center,renorm"  # MUSE normalize_embeddings steps: center, renorm ("" = none)
    max_vocab: int = 200000  # most frequent words kept per language (MUSE's default)
    # Source-rank ranges [start, end) of the train and test dictionaries (disjoint); [] = fit the vocabulary
    # (`rank_bands`). MUSE's [0, 5000] / [5000, 6500] were made for a 200k-word Wikipedia vocabulary, where rank
    # 6,500 is still a frequent word; in a Bible's 6,674 words it is the rarest tail, with a few occurrences
    # and noisy vectors: en-fr CSLS P@1 0.03 there, against 0.47 for the same vectors tested on ranks
    # [0, 1000] and trained on [1000, 5000]. Give both or neither: one fitted band could overlap the other.
    train_ranks: list[int] = field(default_factory=list)
    test_ranks: list[int] = field(default_factory=list)
    csls_k: int = 10  # neighbours in CSLS's hubness penalty
    refine_iters: int = 5  # Procrustes refinement iterations
    refine_max_rank: int = 15000  # refinement dictionary: mutual CSLS neighbours among this many words
    select_max_rank: int = 10000  # model-selection criterion: most frequent source words considered ...
    select_pairs: int = 10000  # ... and the most confident pairs averaged
    identical_max_rank: int = 0  # identical-strings seed among this many words per side (0 = all)
    adv_most_frequent: int = 75000  # the discriminator sees only the most frequent words
    # The adversarial schedule is sized for a CPU. MUSE's (hidden 2048, batch 32, lr 0.1, 5 epochs of 1M words:
    # ~156k mapping steps) takes hours on 2 cores. This one (10 epochs of 500 steps of 128 words) recovered the
    # rotation of a 50k x 300 structured synthetic set to P@1 1.000 in 426 s wall (adversarial.synthetic_pair)
    adv_hidden: int = 512  # discriminator width (d -> h -> h -> 1)
    adv_dropout: float = 0.1  # discriminator input dropout
    adv_smooth: float = 0.1  # discriminator label smoothing
    adv_dis_steps: int = 5  # discriminator steps per mapping step
    adv_batch: int = 128  # words per side in a batch
    adv_epochs: int = 10  # epochs; the best one by the criterion is kept
    adv_epoch_size: int = 64000  # words per epoch: epoch_size / batch mapping steps
    adv_lr: float = 0.5  # SGD learning rate of mapping and discriminator (batch means: a 4x batch, a larger lr)
    adv_lr_decay: float = 0.98  # mapping lr *= decay after every epoch ...
    adv_lr_shrink: float = 0.5  # ... and *= shrink when the criterion got worse
    adv_min_lr: float = 1e-6  # stop when the mapping lr falls below this
    adv_beta: float = 0.001  # orthogonalisation: W <- (1 + beta) W - beta (W W^T) W
    adv_threads: int = 1  # torch threads for adversarial training (0 = as set); its small matmuls gain
    # little from a second thread and lose to one when the machine is busy (50k x 300, hidden 512, loaded
    # 2-core machine: 76 ms a mapping step with 1 thread, 163 ms with 2)
    csls_vocab: int = 20000  # refinement and criterion: CSLS among this many most frequent words per side
    # (vecmap's vocabulary cutoff; MUSE uses every word, which costs (n / csls_vocab)^2 more; 0 = all)
    bf16: bool = True  # similarity blocks in bfloat16, the candidates rescored in fp32 (~3x faster)
    memory_mb: int = 256  # similarity scores held at once during retrieval
    write_vectors: bool = True  # write the mapped source and the normalised target as .vec files
    seed: int = 0  # adversarial training seed (restart r uses seed + r)
    # Adversarial training fails on some seeds (a map the discriminator cannot tell from the target that is
    # not a translation map). Each restart is a full run plus refinement; the best criterion after refinement
    # wins. Bible skip-gram vectors d 100, en-es, seeds 0, 1, 2: criterion after refinement 0.675, 0.672 (failed,
    # CSLS P@1 0.000, 0.004) and 0.732 (P@1 0.368; supervised + refinement 0.747, P@1 0.429)
    adv_restarts: int = 3

    def __post_init__(self):
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"unknown alignment method {m!r}; choose from {', '.join(METHODS)}")
        for step in self.normalize.split(","):
            if step.strip() not in NORM_STEPS:
                raise ValueError(f"normalize step {step!r} is not one of center, renorm, none")
        for name in ("train_ranks", "test_ranks"):
            r = getattr(self, name)
            if r and (len(r) != 2 or not 0 <= r[0] <= r[1]):
                raise ValueError(f"{name} must be two ranks [start, end) with 0 <= start <= end, or [] (fit the "
                                 f"vocabulary), not {r}")
        if bool(self.train_ranks) != bool(self.test_ranks):
            raise ValueError(f"give both train_ranks and test_ranks or neither (both fitted to the vocabulary), not "
                             f"train_ranks {self.train_ranks} with test_ranks {self.test_ranks}")
        if self.train_ranks and max(self.train_ranks[0], self.test_ranks[0]) < min(self.train_ranks[1],
                                                                                   self.test_ranks[1]):
            raise ValueError(f"train_ranks {self.train_ranks} and test_ranks {self.test_ranks} overlap")
        if min(self.csls_k, self.adv_hidden, self.adv_dis_steps, self.adv_batch, self.max_vocab,
               self.memory_mb, self.adv_restarts) < 1:
            raise ValueError("csls_k, adv_hidden, adv_dis_steps, adv_batch, adv_restarts, max_vocab and "
                             "memory_mb must be >= 1")
        if self.csls_vocab and self.csls_vocab < max(self.refine_max_rank, self.select_max_rank):
            raise ValueError(f"csls_vocab {self.csls_vocab} must be 0 (all) or >= refine_max_rank and "
                             f"select_max_rank ({self.refine_max_rank}, {self.select_max_rank})")
        if self.adv_lr <= 0 or not 0 < self.adv_lr_decay <= 1 or not 0 < self.adv_lr_shrink <= 1:
            raise ValueError("adv_lr must be > 0 and adv_lr_decay, adv_lr_shrink in (0, 1]")
        if not 0 <= self.adv_dropout < 1 or not 0 <= self.adv_smooth < 0.5:
            raise ValueError("adv_dropout must be in [0, 1) and adv_smooth in [0, 0.5)")


# ---------------------------------------------------------------------------- dictionary bands

MUSE_TRAIN, MUSE_TEST = (0, 5000), (5000, 6500)  # MUSE's bands, for its 200k-word vocabularies
TEST_SHARE = 5  # a test band lies within the most frequent 1 / TEST_SHARE of the source vocabulary


def rank_bands(cfg: AlignConfig, n_src: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((train start, end), (test start, end)) source-rank bands for a source vocabulary of n_src words:
    cfg's when given, else fitted to the vocabulary.

    Fitted: MUSE's bands where their test band lies within the most frequent fifth of the vocabulary
    (n_src >= 32,500), so large vocabularies keep numbers comparable with published ones. A smaller
    vocabulary tests on its most frequent words, [0, min(1000, n_src / 5)), the only ones a small corpus
    gives good vectors, and trains on the rest up to rank 5,000: a 6,674-word Bible vocabulary gets
    [0, 1000] / [1000, 5000], a 1,000-word one [0, 200] / [200, 1000]. The test band comes first because
    it is the one that must be well estimated; Procrustes fits a d x d rotation from a few thousand pairs
    even when they are rarer words.
    """
    if cfg.train_ranks and cfg.test_ranks:
        return (cfg.train_ranks[0], cfg.train_ranks[1]), (cfg.test_ranks[0], cfg.test_ranks[1])
    if n_src >= TEST_SHARE * MUSE_TEST[1]:
        return MUSE_TRAIN, MUSE_TEST
    test_end = min(1000, n_src // TEST_SHARE)
    return (test_end, max(test_end, min(MUSE_TRAIN[1], n_src))), (0, test_end)


# ---------------------------------------------------------------------------- normalisation, Procrustes

def normalize_embeddings(x: np.ndarray, how: str) -> np.ndarray:
    """Apply MUSE's comma-separated steps in order: "center" (subtract the mean vector), "renorm"
    (unit length rows); e.g. "renorm,center,renorm". Returns a new float32 array."""
    x = np.array(x, dtype=np.float32, copy=True)
    for step in (s.strip() for s in how.split(",")):
        if step == "center":
            x -= x.mean(axis=0, keepdims=True)
        elif step == "renorm":
            x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
        elif step not in ("", "none"):
            raise ValueError(f"unknown normalisation step {step!r}")
    return x


def procrustes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The orthogonal W (d, d) minimising ||a W^T - b||_F: row a_i maps to W a_i ~ b_i.

    M = b^T a, U S V^T = svd(M), W = U V^T (Schönemann 1966; MUSE, vecmap). Computed in float64.
    """
    if a.shape != b.shape or a.ndim != 2 or len(a) == 0:
        raise ValueError(f"procrustes needs two (n, d) arrays of one shape with n > 0, got {a.shape}, "
                         f"{b.shape}")
    m = b.astype(np.float64).T @ a.astype(np.float64)  # (d, d)
    u, _, vt = np.linalg.svd(m)
    return u @ vt  # (d, d) float64


# ---------------------------------------------------------------------------- learning the mapping

def refine(x: np.ndarray, y: np.ndarray, w: np.ndarray, cfg: AlignConfig,
           log: Callable[[str], None] = print, label: str = "refine") -> tuple[np.ndarray, list[dict]]:
    """Procrustes refinement: `cfg.refine_iters` rounds of (mutual CSLS dictionary -> Procrustes).

    Keeps the best mapping by the unsupervised criterion, the starting one included. Only the
    `cfg.csls_vocab` most frequent words of each side take part (dictionaries and criterion).
    """
    if cfg.csls_vocab:
        x, y = x[:cfg.csls_vocab], y[:cfg.csls_vocab]
    space = _space(x, y, w, cfg)
    best_w, best = w, mean_cosine(space, cfg.select_max_rank, cfg.select_pairs)
    history = [{"iter": 0, "criterion": best}]
    for it in range(1, cfg.refine_iters + 1):
        dico = build_dictionary(space, "S2T&T2S", "csls", cfg.refine_max_rank)
        if len(dico) == 0:
            log(f"{label} {it}: empty dictionary; stopping")
            break
        w = procrustes(x[dico[:, 0]], y[dico[:, 1]])
        space = _space(x, y, w, cfg)  # scores this W and builds the next dictionary
        crit = mean_cosine(space, cfg.select_max_rank, cfg.select_pairs)
        history.append({"iter": it, "pairs": len(dico), "criterion": crit})
        log(f"{label} {it}: {len(dico):,} mutual pairs, criterion {crit:.4f}")
        if crit > best:
            best_w, best = w, crit
    return best_w, history


def _space(x: np.ndarray, y: np.ndarray, w: np.ndarray, cfg: AlignConfig) -> Space:
    return Space(x @ w.T.astype(np.float32), y, cfg.csls_k, cfg.memory_mb, bf16=cfg.bf16)


def criterion(x: np.ndarray, y: np.ndarray, w: np.ndarray, cfg: AlignConfig) -> float:
    """MUSE's unsupervised criterion of W, among the `cfg.csls_vocab` most frequent words per side."""
    if cfg.csls_vocab:
        x, y = x[:cfg.csls_vocab], y[:cfg.csls_vocab]
    return mean_cosine(_space(x, y, w, cfg), cfg.select_max_rank, cfg.select_pairs)


def learn_mapping(method: str, x: np.ndarray, y: np.ndarray, src_words: list[str], tgt_words: list[str],
                  train: np.ndarray | None, cfg: AlignConfig,
                  log: Callable[[str], None] = print) -> tuple[np.ndarray, dict]:
    """One method's W (d, d) and what happened on the way ({"history": ..., "raw_w": ...})."""
    info: dict = {}
    if method in SUPERVISED:
        if train is None or len(train) == 0:
            raise XlingError(f"method {method} needs a training dictionary with pairs in ranks "
                             f"{list(rank_bands(cfg, len(src_words))[0])}; give one (--dict) or use adversarial / "
                             f"identical")
        w = procrustes(x[train[:, 0]], y[train[:, 1]])
        if method == "procrustes-refine":
            info["raw_w"] = w
            w, info["history"] = refine(x, y, w, cfg, log, "procrustes refine")
    elif method == "adversarial":
        w, info = adversarial_restarts(x, y, cfg, log)
    elif method == "identical":
        seed = identical_pairs(src_words, tgt_words, cfg.identical_max_rank)
        info["seed_pairs"] = len(seed)
        log(f"identical strings: {len(seed):,} words in both vocabularies")
        if len(seed) < 2:
            raise XlingError("fewer than 2 identical strings in the two vocabularies (different scripts?); "
                             "use adversarial or a dictionary instead")
        w = procrustes(x[seed[:, 0]], y[seed[:, 1]])
        info["raw_w"] = w
        w, info["history"] = refine(x, y, w, cfg, log, "identical refine")
    else:
        raise ValueError(f"unknown method {method!r}")
    return w, info


def adversarial_restarts(x: np.ndarray, y: np.ndarray, cfg: AlignConfig,
                         log: Callable[[str], None] = print) -> tuple[np.ndarray, dict]:
    """`cfg.adv_restarts` runs of adversarial training + refinement (seeds seed, seed + 1, ...); the run
    with the best refined criterion wins (MUSE's unsupervised model selection, applied across seeds).

    Returns its refined W and info: "raw_w" (its W before refinement), "adversarial" and "history" (its
    epochs and refinement), "runs" (seed, criterion before and after refinement of every run).
    """
    runs, best = [], None
    for r in range(cfg.adv_restarts):
        seed = cfg.seed + r
        raw, epochs = adversarial(x, y, replace(cfg, seed=seed), log, score=lambda w: criterion(x, y, w, cfg))
        w, history = refine(x, y, raw, cfg, log, "adversarial refine")
        # the refined maps' criterion (not the start's): on a wrong map refinement finds no consistent
        # dictionary and it falls, while refine() itself would keep the start
        start = history[0]["criterion"]
        refined = max((h["criterion"] for h in history[1:]), default=start)
        runs.append({"seed": seed, "criterion": start, "refined_criterion": refined})
        log(f"adversarial run {r + 1}/{cfg.adv_restarts} (seed {seed}): criterion {start:.4f}, refined {refined:.4f}")
        if best is None or refined > best[0]:
            best = (refined, w, {"raw_w": raw, "adversarial": epochs, "history": history})
    _, w, info = best
    info["runs"] = runs
    if len(runs) > 1:
        log(f"adversarial: run {runs.index(max(runs, key=lambda e: e['refined_criterion'])) + 1} of {len(runs)} "
            f"kept (best refined criterion)")
    return w, info


# ---------------------------------------------------------------------------- the whole task

def run_align(src: Vectors, tgt: Vectors, out_dir: str | Path, *, src_lang: str, tgt_lang: str,
              pairs: list[tuple[str, str]] | None = None, cfg: AlignConfig | None = None,
              log: Callable[[str], None] = print) -> dict:
    """Learn every method's mapping src -> tgt, evaluate it, write the outputs into `out_dir`:

    W-<method>.npy (the (d, d) map, applied to normalised source vectors: x -> W x),
    vectors/<src>-<method>.vec and vectors/<tgt>.vec (if cfg.write_vectors), results.json,
    table.md (P@1/5/10, NN and CSLS, per method) and p_at_1_by_band.png.
    Returns results.json's content; `results["metrics"]` holds flat `align.*` numbers.
    """
    cfg = cfg or AlignConfig()
    out_dir = Path(out_dir)
    src, tgt = src.head(cfg.max_vocab), tgt.head(cfg.max_vocab)
    if src.dim != tgt.dim:
        raise XlingError(f"source vectors have dimension {src.dim} but target vectors {tgt.dim}; "
                         f"an orthogonal map needs equal dimensions")
    for vecs, lang in ((src, src_lang), (tgt, tgt_lang)):
        bad = np.flatnonzero(~np.isfinite(vecs.vecs).all(axis=1))
        if len(bad):
            raise XlingError(f"the {lang} vector of {vecs.words[bad[0]][:40]!r} (row {bad[0] + 1}) has inf or "
                             f"nan values ({len(bad)} such rows); fix or drop them before aligning")
    x, y = normalize_embeddings(src.vecs, cfg.normalize), normalize_embeddings(tgt.vecs, cfg.normalize)
    pair = f"{src_lang}-{tgt_lang}"
    train = test = held_out_all = None
    results: dict = {"pair": pair, "src_words": len(src), "tgt_words": len(tgt), "dim": src.dim,
                     "config": asdict(cfg), "methods": {}}
    if pairs:
        idx, stats = filter_pairs(pairs, src.index, tgt.index)
        log(coverage_line(stats, src_lang, tgt_lang))
        if len(idx) == 0:
            raise XlingError(f"no pair of the {src_lang}-{tgt_lang} dictionary ({stats['pairs']:,} pairs) has both "
                             f"words in the vocabularies; check the languages and the word forms (lowercase)")
        train_ranks, test_ranks = rank_bands(cfg, len(src))
        train, test = split_by_rank(idx, train_ranks, test_ranks)
        results["dictionary"] = dict(stats, train_pairs=len(train), test_pairs=len(test),
                                     train_words=len(np.unique(train[:, 0])),
                                     test_words=len(np.unique(test[:, 0])),
                                     train_ranks=list(train_ranks), test_ranks=list(test_ranks),
                                     copy_p_at_1=copy_baseline(test, src.words, tgt.index))
        log(f"train dictionary: {len(train):,} pairs (source ranks {list(train_ranks)}); test: {len(test):,} "
            f"pairs, {results['dictionary']['test_words']:,} source words (ranks {list(test_ranks)}"
            f"{'' if cfg.train_ranks else ', fitted to ' + format(len(src), ',') + ' source words'})")
        held_out_all = idx
    methods = [m for m in cfg.methods if pairs or m not in SUPERVISED]
    if not pairs and len(methods) < len(cfg.methods):
        log("no dictionary: skipping the supervised methods and P@k")
    band_rows = {}
    for method in methods:
        t0 = time.perf_counter()
        try:
            w, info = learn_mapping(method, x, y, src.words, tgt.words, train, cfg, log)
        except XlingError as e:  # e.g. no identical strings across scripts: the other methods still run
            log(f"{method}: skipped: {e}")
            continue
        seconds = time.perf_counter() - t0
        entry = {"seconds": seconds, **{k: v for k, v in info.items() if k != "raw_w"}}
        variants = [(method, w)] + ([(f"{method} (no refinement)", info["raw_w"])] if "raw_w" in info else [])
        for name, wv in variants:
            space = _space(x, y, wv, cfg)
            ev = {"criterion": criterion(x, y, wv, cfg)}
            if test is not None and len(test):
                for how in ("nn", "csls"):
                    p, _, _ = evaluate_bli(space, test, how)
                    ev[how] = {f"p@{k}": v for k, v in p.items()}
            if name == method:
                entry.update(ev)
                atomic_write_bytes(out_dir / f"W-{method}.npy", _npy(wv))
                if pairs:
                    # every dictionary pair whose source word the method did not train on
                    trained = set(train[:, 0].tolist()) if method in SUPERVISED else set()
                    held = held_out_all[~np.isin(held_out_all[:, 0], list(trained))]
                    band_rows[method] = _by_band(space, held, len(src))
                if cfg.write_vectors:
                    write_vec(out_dir / "vectors" / f"{src_lang}-{method}.vec", Vectors(src.words, x @ wv.T))
            else:
                entry["no_refinement"] = ev
        results["methods"][method] = entry
        p1 = f", P@1 NN {entry['nn']['p@1']:.3f} CSLS {entry['csls']['p@1']:.3f}" if "csls" in entry else ""
        log(f"{method}: {seconds:.1f} s, criterion {entry['criterion']:.4f}{p1}")
    if not results["methods"]:
        raise XlingError(f"no alignment method could run for {pair} (see above); give a dictionary with "
                         f"pairs in align.train_ranks or add adversarial to align.methods")
    if cfg.write_vectors:
        write_vec(out_dir / "vectors" / f"{tgt_lang}.vec", Vectors(tgt.words, y))
    results["bands"] = band_rows
    results["selected"] = selected_methods(results)
    for kind, pick in results["selected"].items():  # which start won is reported, never hidden
        crits = ", ".join(f"{m} {results['methods'][m]['criterion']:.4f}" for m in KINDS[kind]
                          if m in results["methods"])
        log(f"{pair} {kind}: the criterion picks {pick} ({crits})")
    results["metrics"] = align_metrics(results)
    table = results_table(results)
    results["table"] = table
    atomic_write_text(out_dir / "table.md", table + "\n")
    atomic_write_json(out_dir / "results.json", _jsonable(results))
    if any(band_rows.values()):
        plot_bands(band_rows, out_dir / "p_at_1_by_band.png", pair)
    log(table)
    return results


def copy_baseline(test: np.ndarray, src_words: list[str], tgt_index: dict[str, int]) -> float:
    """P@1 of the trivial system that translates every word as itself: the share of test source words one of
    whose dictionary translations is the same string (names, numbers, loans). What a map must beat."""
    words = np.unique(test[:, 0])
    if not len(words):
        return 0.0
    gold = set(map(tuple, test.tolist()))
    hits = sum((int(i), tgt_index[src_words[i]]) in gold for i in words if src_words[i] in tgt_index)
    return hits / len(words)


def _by_band(space: Space, pairs: np.ndarray, n_src: int) -> list[dict]:
    rows = []
    for lo, hi in frequency_bands(n_src):
        sel = pairs[(pairs[:, 0] >= lo) & (pairs[:, 0] < hi)]
        if len(sel):
            p, q, _ = evaluate_bli(space, sel, "csls", ks=(1,))
            rows.append({"band": f"{lo}-{hi}", "words": len(q), "p@1": p[1]})
    return rows


KINDS = {"supervised": SUPERVISED, "unsupervised": ("adversarial", "identical")}


def selected_methods(results: dict) -> dict[str, str]:
    """{"supervised": m, "unsupervised": m}: per kind, the learned method with the best unsupervised
    criterion (no dictionary needed), e.g. adversarial vs identical-strings start."""
    methods = results["methods"]
    out = {}
    for kind, names in KINDS.items():
        scored = [m for m in names if m in methods]
        if scored:
            out[kind] = max(scored, key=lambda m: methods[m]["criterion"])
    return out


def align_metrics(results: dict) -> dict[str, float]:
    """Flat metrics: align.p_at_1.<pair>.<method>.<nn|csls>, plus the headline numbers
    align.p_at_1.<pair>.supervised (best supervised method by the criterion, CSLS) and
    align.p_at_1.<pair>.unsupervised (the unsupervised method the criterion picks, CSLS); with a test
    dictionary, align.test_words.<pair> and align.p_at_1.<pair>.copy (`copy_baseline`)."""
    pair, out = results["pair"], {}
    methods = results["methods"]
    for m, e in methods.items():
        for how in ("nn", "csls"):
            if how in e:
                out[f"align.p_at_1.{pair}.{m}.{how}"] = e[how]["p@1"]
    for kind, pick in selected_methods(results).items():
        if "csls" in methods[pick]:
            out[f"align.p_at_1.{pair}.{kind}"] = methods[pick]["csls"]["p@1"]
    d = results.get("dictionary")
    if d and d["test_words"]:  # what the numbers rest on, and the trivial system they must beat
        out[f"align.test_words.{pair}"] = d["test_words"]
        out[f"align.p_at_1.{pair}.copy"] = d["copy_p_at_1"]
    return out


def results_table(results: dict) -> str:
    rows = []
    for m, e in results["methods"].items():
        for name, ev in ((f"{m} (no refinement)", e.get("no_refinement")), (m, e)):
            if ev is None:
                continue
            row = [name, ev["criterion"]]
            for how in ("nn", "csls"):
                row += [ev[how][f"p@{k}"] for k in (1, 5, 10)] if how in ev else ["-"] * 3
            rows.append(row + [e["seconds"] if ev is e else "-"])
    header = ["method", "criterion", "NN P@1", "NN P@5", "NN P@10", "CSLS P@1", "CSLS P@5", "CSLS P@10",
              "seconds"]
    d = results.get("dictionary")
    title = f"Word-embedding alignment {results['pair']}" + (
        f" (test: {d['test_words']:,} source words)" if d else " (no dictionary: no P@k)")
    return format_table(header, rows, title=title)


def plot_bands(band_rows: dict[str, list[dict]], path: str | Path, pair: str) -> None:
    """P@1 (CSLS) against the source word's frequency band, one line per method (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # one shared x axis in frequency order, whatever bands each method has held-out words in
    bands = sorted({r["band"] for rows in band_rows.values() for r in rows},
                   key=lambda b: int(b.split("-")[0]))
    fig, ax = plt.subplots(figsize=(7, 4))
    for method, rows in band_rows.items():
        if rows:
            x = [bands.index(r["band"]) for r in rows]
            ax.plot(x, [r["p@1"] for r in rows], marker="o", label=method)
    ax.set_xticks(range(len(bands)), bands)
    ax.set_xlabel("source word frequency rank")
    ax.set_ylabel("P@1 (CSLS)")
    ax.set_ylim(0, 1)
    ax.set_title(f"{pair}: translation accuracy by word frequency (held-out pairs)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a, dtype=np.float32))
    return buf.getvalue()


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.integer | np.floating):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


# ---------------------------------------------------------------------------- entry points for the CLI

def align_files(src_vec: str | Path, tgt_vec: str | Path, out_dir: str | Path, *, src_lang: str,
                tgt_lang: str, dictionary: str | None = None, cfg: AlignConfig | None = None,
                log: Callable[[str], None] = print) -> dict:
    """`xling align --src-vec A --tgt-vec B`: align two `.vec` files; `dictionary` = a MUSE file,
    "freedict", "cldr", "freedict+cldr" or None (unsupervised methods only)."""
    check_lang(src_lang, "--src")
    check_lang(tgt_lang, "--tgt")
    cfg = cfg or AlignConfig()
    src = read_vec(src_vec, max_words=cfg.max_vocab)
    tgt = read_vec(tgt_vec, max_words=cfg.max_vocab)
    if src.dim != tgt.dim:  # before a dictionary is loaded (FreeDict en-de takes seconds)
        raise XlingError(f"{src_vec} has {src.dim}-dimensional vectors but {tgt_vec} {tgt.dim}-dimensional; "
                         f"an orthogonal map needs equal dimensions")
    for vecs, path in ((src, src_vec), (tgt, tgt_vec)):
        if len(vecs) < 2:
            raise XlingError(f"{path} holds {len(vecs)} word vector(s); alignment needs a vocabulary")
    pairs = load_dictionary(dictionary, src_lang, tgt_lang) if dictionary else None
    return run_align(src, tgt, out_dir, src_lang=src_lang, tgt_lang=tgt_lang, pairs=pairs, cfg=cfg, log=log)


def align_pairs(corpus_dir: str | Path, out_dir: str | Path, src_lang: str, tgt_langs: list[str], *,
                vectors_cfg: VectorsConfig | None = None, cfg: AlignConfig | None = None,
                dictionary: str = "freedict", vectors_dir: str | Path | None = None,
                log: Callable[[str], None] = print) -> dict[str, dict]:
    """Align `src_lang` to each of `tgt_langs` of a corpus: {pair: run_align's results}.

    Vectors are `<vectors_dir>/<lang>.vec` when given (e.g. from `xling vectors --from-model`), else
    static vectors trained on the corpus's train split, cached in `<out_dir>/vectors/`. Dictionaries
    as `dictionary_pairs` (cached in `<out_dir>/dicts/`); each pair's outputs go to `<out_dir>/<pair>/`.
    """
    from xling.corpus import Corpus

    corpus = Corpus(corpus_dir)
    out_dir = Path(out_dir)
    langs = list(dict.fromkeys([src_lang, *tgt_langs]))
    for lang in langs:  # every language checked before any training starts
        check_lang(lang)
        if lang not in corpus.langs:
            raise XlingError(f"language {lang!r} is not in the corpus {corpus_dir} ({', '.join(corpus.langs)})")
        if lang == src_lang and lang in tgt_langs:
            raise XlingError(f"source and target language are both {lang!r}; align two different languages")
    vecs = {}
    for lang in langs:
        t0 = time.perf_counter()
        if vectors_dir is not None:
            vecs[lang] = read_vec(Path(vectors_dir) / f"{lang}.vec")
            how = f"read from {vectors_dir}"
        else:
            vecs[lang], cached = corpus_vectors(corpus, lang, out_dir / "vectors", vectors_cfg)
            how = "cached" if cached else f"trained in {time.perf_counter() - t0:.1f} s"
        log(f"vectors {lang}: {len(vecs[lang]):,} words x {vecs[lang].dim} ({how})")
    results = {}
    for tgt in tgt_langs:
        pairs = dictionary_pairs(dictionary, src_lang, tgt, out_dir / "dicts", log)
        if pairs and len(filter_pairs(pairs, vecs[src_lang].index, vecs[tgt].index)[0]) == 0:
            log(f"dictionary for {src_lang}-{tgt}: no pair in the vocabularies; unsupervised methods only")
            pairs = None
        results[f"{src_lang}-{tgt}"] = run_align(vecs[src_lang], vecs[tgt], out_dir / f"{src_lang}-{tgt}",
                                                 src_lang=src_lang, tgt_lang=tgt, pairs=pairs, cfg=cfg, log=log)
    return results


def align_from_corpus(corpus_dir: str | Path, out_dir: str | Path, src_lang: str, tgt_langs: list[str], *,
                      vectors_cfg: VectorsConfig | None = None, cfg: AlignConfig | None = None,
                      dictionary: str = "freedict", vectors_dir: str | Path | None = None,
                      log: Callable[[str], None] = print) -> dict[str, float]:
    """`xling align --run RUN`: `align_pairs`, then the merged `align.*` metrics of every pair
    (also written to `<out_dir>/metrics.json`). Where `dictionary` has nothing for a pair, CLDR
    names are tried, then none (unsupervised methods only, no P@k)."""
    results = align_pairs(corpus_dir, out_dir, src_lang, tgt_langs, vectors_cfg=vectors_cfg, cfg=cfg,
                          dictionary=dictionary, vectors_dir=vectors_dir, log=log)
    metrics: dict[str, float] = {}
    for res in results.values():
        metrics.update(res["metrics"])
    atomic_write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics


def align_command(src: str | None, tgt: str | None, *, cfg: AlignConfig, vectors_cfg: VectorsConfig,
                  src_vec: str | None = None, tgt_vec: str | None = None, run: str | None = None,
                  vectors: str | None = None, out: str | None = None, dictionary: str | None = None,
                  default_run: str = "runs/demo") -> Path:
    """`xling align`: two modes, told apart by the options. Files mode (src_vec and tgt_vec) aligns two `.vec`
    files into `out` (default align/SRC-TGT); run mode (run, default `default_run`) aligns a run's languages,
    `tgt` may list several (fr,ru), into `out` (default <run>/align). A mix of the two is one XlingError.
    Returns the output folder."""
    if not src or not tgt:
        raise XlingError("give the languages: --src en --tgt fr (in run mode --tgt may list several: fr,ru)")
    if src_vec or tgt_vec:
        if not (src_vec and tgt_vec):
            raise XlingError("give both --src-vec and --tgt-vec (.vec files), or neither and --run RUN")
        if run or vectors:
            raise XlingError("--src-vec/--tgt-vec align two files; --run/--vectors align a run's languages: "
                             "use one or the other")
        out_dir = Path(out or f"align/{src}-{tgt}")
        align_files(src_vec, tgt_vec, out_dir, src_lang=src, tgt_lang=tgt, dictionary=dictionary, cfg=cfg)
    else:
        run_dir = Path(run or default_run)
        out_dir = Path(out or run_dir / "align")
        tgts = [x.strip() for x in tgt.split(",") if x.strip()]
        align_from_corpus(run_dir / "corpus", out_dir, src, tgts, vectors_cfg=vectors_cfg, cfg=cfg,
                          dictionary=dictionary or "freedict", vectors_dir=vectors)
    return out_dir


def load_mapping(path: str | Path) -> np.ndarray:
    """A W-<method>.npy written by run_align (a (d, d) float array; no pickles)."""
    try:
        w = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise XlingError(f"mapping {path} cannot be read ({e}); give a W-<method>.npy from xling align") \
            from None
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise XlingError(f"mapping {path} has shape {w.shape}; expected a square (d, d) matrix")
    return w


__all__ = ["AlignConfig", "METHODS", "SUPERVISED", "rank_bands", "copy_baseline", "normalize_embeddings", "procrustes",
           "orthogonalize",
           "refine", "criterion", "adversarial", "adversarial_restarts",
           "learn_mapping", "run_align", "align_metrics", "results_table",
           "plot_bands", "align_files", "dictionary_pairs", "align_pairs", "align_from_corpus", "align_command",
           "load_mapping",
           "selected_methods", "KINDS",
           "synthetic_pair",  # re-exported from xling.tasks.adversarial (as adversarial, orthogonalize)
           # re-exported from xling.tasks.csls
           "Space", "topk_scores", "mean_knn_sim", "csls_reference", "candidate_pairs", "build_dictionary",
           "mean_cosine", "evaluate_bli", "frequency_bands"]
