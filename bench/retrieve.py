"""Exact top-k retrieval speed and peak memory: xling's chunked search vs a full `q @ d.T` + argpartition.

    .venv/bin/python bench/retrieve.py                        # 10k and 100k documents, 1k queries, d = 256
    .venv/bin/python bench/retrieve.py --sizes 10000 --rounds 5

Task: the k = 5 nearest documents by cosine for each query, from unit vectors (what `xling retrieve` and
`xling mine` do after encoding). Systems, run side by side in this process on the same arrays:
  xling chunked   `xling.encode.nearest`: one BLAS product per block of queries, the block sized
                  so its scores stay under 256 MiB, top-k by `torch.topk`
  full matrix     the peer: `q @ d.T` for all queries at once, `np.argpartition`, then a sort of the k
  faiss flat      `faiss.IndexFlatIP` (exact), when `faiss` is importable
Peak memory = the largest resident-set growth while the search runs (sampled every 2 ms), beyond the
query and document arrays themselves. Seconds = median over rounds. "same top-k" = share of queries
whose k neighbours equal the peer's, in order. "% fp32 peak" = the scores' 2 * Q * N * d FLOPs per second over
torch's fp32 matmul peak measured in the same run (numpy's BLAS may differ from torch's; the top-k selection is
not counted). The last line is machine-readable name=value pairs.
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
from _peak import cpu_line, peak_text, peaks, share  # noqa: E402

from xling.encode import nearest  # noqa: E402
from xling.progress import format_table  # noqa: E402

K = 5


def ours(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    return nearest(q, d, K)[1]


def full_matrix(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    sim = q @ d.T  # (Q, N): every score at once
    top = np.argpartition(-sim, K - 1, axis=1)[:, :K]
    order = np.argsort(-np.take_along_axis(sim, top, 1), axis=1, kind="stable")
    return np.take_along_axis(top, order, 1)


def faiss_flat(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatIP(d.shape[1])
    index.add(d)
    return index.search(q, K)[1]


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="document counts")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per system (median reported)")
    args = ap.parse_args()
    os.environ.setdefault("XLING_PROGRESS", "0")
    systems = {"full q @ d.T + argpartition": ("full", full_matrix), "xling chunked": ("ours", ours)}  # peer first
    try:
        import faiss  # noqa: F401

        systems["faiss IndexFlatIP"] = ("faiss", faiss_flat)
    except ImportError:
        print("faiss is not installed: its row is skipped (pip install faiss-cpu)", file=sys.stderr)
    rows, kv = [], {}
    mm_peak = peaks()
    fp32_peak = mm_peak["fp32"]
    q = unit_vectors(args.queries, args.dim, 0)
    for n in (int(s) for s in args.sizes.split(",")):
        d = unit_vectors(n, args.dim, 1)
        answers = {}
        for name, (key, fn) in systems.items():
            fn(q[:8], d)  # warm-up: thread pools, kernel selection
            times, peak = [], 0.0
            for _ in range(args.rounds):
                with PeakRSS() as mem:
                    t0 = time.perf_counter()
                    answers[key] = fn(q, d)
                    times.append(time.perf_counter() - t0)
                peak = max(peak, mem.mb)
            sec = float(np.median(times))
            same = float((answers[key] == answers["full"]).all(1).mean())
            rows.append([name, n, len(q), round(sec, 3), round(len(q) / sec), round(peak), same,
                         share(2 * len(q) * n * args.dim / sec / 1e9, fp32_peak)])
            tag = f"{n // 1000}k"
            kv[f"qps_{tag}_{key}"] = round(len(q) / sec)
            kv[f"peak_mb_{tag}_{key}"] = round(peak)
        kv[f"speedup_{n // 1000}k"] = round(kv[f"qps_{n // 1000}k_ours"] / kv[f"qps_{n // 1000}k_full"], 2)
    kv["fp32_peak_gflops"] = round(fp32_peak)
    print(f"{cpu_line()}; {peak_text(mm_peak)}")
    header = ["system", "documents", "queries", "seconds", "queries/s", "peak MiB", "same top-k as full",
              "% fp32 peak"]
    print(format_table(header, rows, title=f"Exact top-{K} cosine search, d={args.dim}, torch threads "
                                           f"{torch.get_num_threads()}"))
    print(" ".join(f"{k}={v}" for k, v in kv.items()))


if __name__ == "__main__":
    main()
