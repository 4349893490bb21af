"""CSLS retrieval speed and peak memory: xling's chunked top-k vs brute force in numpy and torch.

    .venv/bin/python bench/align.py                      # 10k and 100k words, d = 300
    .venv/bin/python bench/align.py --sizes 10000 --rounds 3

Task: translate `queries` mapped source words into a target vocabulary of n words with CSLS
(k = 10 neighbours, top-10 candidates), hubness terms included, from unit vectors. Ours computes the
similarities in row chunks (256 MB) with a top-k per chunk; the peers build whole (n x n) similarity
matrices, as a straightforward implementation does (numpy: argpartition; torch: topk). At 100k
words the peers' 40 GB matrices do not fit in memory, so only ours runs. Peak memory = the largest
resident-set growth over the run, sampled every 2 ms. The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_memory.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _memory import PeakRSS  # noqa: E402

from xling.progress import format_table  # noqa: E402
from xling.tasks.align import Space  # noqa: E402

K, TOPK = 10, 10


def ours(src: np.ndarray, tgt: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return Space(src, tgt, csls_k=K, memory_mb=256).s2t(queries, TOPK, "csls")[1]


def brute_numpy(src: np.ndarray, tgt: np.ndarray, queries: np.ndarray) -> np.ndarray:
    sims = src @ tgt.T  # (n_s, n_t): every cosine at once
    r_src = -np.partition(-sims[queries], K, axis=1)[:, :K].mean(axis=1)  # (q,)
    r_tgt = -np.partition(-sims, K, axis=0)[:K].mean(axis=0)  # (n_t,)
    scores = 2 * sims[queries] - r_src[:, None] - r_tgt[None, :]  # (q, n_t)
    del sims
    top = np.argpartition(-scores, TOPK, axis=1)[:, :TOPK]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def brute_torch(src: np.ndarray, tgt: np.ndarray, queries: np.ndarray) -> np.ndarray:
    s, t, q = torch.from_numpy(src), torch.from_numpy(tgt), torch.from_numpy(queries)
    sims = s @ t.T  # (n_s, n_t)
    r_src = sims[q].topk(K, dim=1).values.mean(dim=1)
    r_tgt = sims.topk(K, dim=0).values.mean(dim=0)
    scores = 2 * sims[q] - r_src[:, None] - r_tgt[None, :]
    del sims
    return scores.topk(TOPK, dim=1).indices.numpy()


def unit_vectors(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="vocabulary sizes (both languages)")
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--queries", type=int, default=10000, help="source words translated per run")
    ap.add_argument("--rounds", type=int, default=1, help="timed rounds per system (median reported)")
    ap.add_argument("--peer-limit-gb", type=float, default=8.0, help="skip a peer whose matrices exceed this")
    args = ap.parse_args()
    os.environ.setdefault("XLING_PROGRESS", "0")
    rows, kv = [], {}
    for n in (int(s) for s in args.sizes.split(",")):
        src, tgt = unit_vectors(n, args.dim, 0), unit_vectors(n, args.dim, 1)
        queries = np.arange(min(args.queries, n))
        need_gb = 2 * n * n * 4 / 2**30  # the (n, n) similarities plus a same-sized temporary
        systems = {"xling chunked top-k": ours, "numpy brute force": brute_numpy,
                   "torch brute force": brute_torch}
        answers = {}
        for name, fn in systems.items():
            if name != "xling chunked top-k" and need_gb > args.peer_limit_gb:
                rows.append([name, n, len(queries), "-", "-", f"skipped: needs ~{need_gb:.0f} GB", "-"])
                continue
            times, peak = [], 0.0
            for _ in range(args.rounds):
                with PeakRSS() as mem:
                    t0 = time.perf_counter()
                    answers[name] = fn(src, tgt, queries)
                    times.append(time.perf_counter() - t0)
                peak = max(peak, mem.mb)
            sec = float(np.median(times))
            agree = float((answers[name][:, 0] == answers["xling chunked top-k"][:, 0]).mean())
            rows.append([name, n, len(queries), round(sec, 2), round(len(queries) / sec), round(peak), agree])
            key = {"xling chunked top-k": "ours", "numpy brute force": "numpy",
                   "torch brute force": "torch"}[name]
            kv[f"qps_{n // 1000}k_{key}"] = round(len(queries) / sec)
            kv[f"peak_mb_{n // 1000}k_{key}"] = round(peak)
    header = ["system", "words", "queries", "seconds", "queries/s", "peak MB", "top-1 = ours"]
    print(format_table(header, rows,
                       title=f"CSLS retrieval (k={K}, top-{TOPK}, d={args.dim}), torch threads "
                             f"{torch.get_num_threads()}"))
    print(" ".join(f"{k}={v}" for k, v in kv.items()))


if __name__ == "__main__":
    main()
