"""Learning the map from source to target word vectors: normalisation, Procrustes, refinement on mutual CSLS
neighbours, the unsupervised selection criterion, and adversarial training with restarts.

    W = procrustes(X[train[:, 0]], Y[train[:, 1]])           # supervised, from a seed dictionary
    W, log = learn_mapping("adversarial", X, Y, src_words, tgt_words, None, cfg)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from xling.errors import XlingError
from xling.tasks.align.adversarial import adversarial
from xling.tasks.align.config import SUPERVISED, AlignConfig, rank_bands
from xling.tasks.align.csls import (
    Space,
    build_dictionary,
    mean_cosine,
)
from xling.tasks.align.dictionaries import (
    identical_pairs,
)

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
    space = mapped_space(x, y, w, cfg)
    best_w, best = w, mean_cosine(space, cfg.select_max_rank, cfg.select_pairs)
    history = [{"iter": 0, "criterion": best}]
    for it in range(1, cfg.refine_iters + 1):
        dico = build_dictionary(space, "S2T&T2S", "csls", cfg.refine_max_rank)
        if len(dico) == 0:
            log(f"{label} {it}: empty dictionary; stopping")
            break
        w = procrustes(x[dico[:, 0]], y[dico[:, 1]])
        space = mapped_space(x, y, w, cfg)  # scores this W and builds the next dictionary
        crit = mean_cosine(space, cfg.select_max_rank, cfg.select_pairs)
        history.append({"iter": it, "pairs": len(dico), "criterion": crit})
        log(f"{label} {it}: {len(dico):,} mutual pairs, criterion {crit:.4f}")
        if crit > best:
            best_w, best = w, crit
    return best_w, history


def mapped_space(x: np.ndarray, y: np.ndarray, w: np.ndarray, cfg: AlignConfig) -> Space:
    return Space(x @ w.T.astype(np.float32), y, cfg.csls_k, cfg.memory_mb, bf16=cfg.bf16)


def criterion(x: np.ndarray, y: np.ndarray, w: np.ndarray, cfg: AlignConfig) -> float:
    """MUSE's unsupervised criterion of W, among the `cfg.csls_vocab` most frequent words per side."""
    if cfg.csls_vocab:
        x, y = x[:cfg.csls_vocab], y[:cfg.csls_vocab]
    return mean_cosine(mapped_space(x, y, w, cfg), cfg.select_max_rank, cfg.select_pairs)


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
