"""Alignment speed: learning a mapping at MUSE's scale, and CSLS retrieval memory, ours vs plain peers.

    .venv/bin/python bench/align.py                               # both tasks (about 10-15 minutes)
    .venv/bin/python bench/align.py --task mapping --words 50000  # the issue's speed targets only
    .venv/bin/python bench/align.py --task retrieval --sizes 10000 --rounds 3

mapping: 50k words x 300 dimensions per language, synthetic (`xling.tasks.align.adversarial.synthetic_pair`):
an anisotropic power-law spectrum, Zipf-sized clusters and a frequency order (rarer = noisier), the
target = a random rotation of the source plus noise. A rotated isotropic Gaussian cloud would be
no test at all: it looks the same in every rotation, so no unsupervised method can recover it.
Timed: supervised Procrustes on the ranks 0-5000 dictionary + 5 refinement iterations (mutual CSLS
neighbours) with AlignConfig's defaults, and the adversarial run (+ refinement) with a CPU-sized
schedule (--adv-epochs/--adv-epoch-size/--adv-hidden/--adv-batch/--adv-lr; 0 = AlignConfig's =
MUSE's); P@1 (CSLS) on the held-out ranks 5000-6500. The peer is MUSE's refinement written plainly
in torch (CSLS hubness terms over the whole vocabulary, 128-row batches, fp32), the same dictionary
size and iterations. Targets (issue 7): Procrustes + 5 refinements < 60 s, adversarial < 10 min on
the 2-core CPU. CPU seconds (all threads) and the load average are printed beside wall seconds: on
a shared machine they vary less.

retrieval: translate `queries` mapped source words into a target vocabulary of n words with CSLS
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
from xling.tasks.align.adversarial import synthetic_pair  # noqa: E402
from xling.tasks.align.config import AlignConfig
from xling.tasks.align.csls import Space, evaluate_bli
from xling.tasks.align.mapping import learn_mapping, normalize_embeddings, procrustes

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


def muse_refine(x: np.ndarray, y: np.ndarray, w: np.ndarray, iters: int, max_rank: int, k: int = K) -> np.ndarray:
    """The peer: MUSE's refinement loop written plainly (r over the whole vocabulary, 128-row batches)."""
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)

    def knn_mean(q, keys):  # (n,) mean cosine of each query's k nearest keys
        return torch.cat([(q[i:i + 128] @ keys.T).topk(k, dim=1).values.mean(1) for i in range(0, len(q), 128)])

    def candidates(a, b, r_a, r_b):  # best b of each of a's max_rank first rows, by CSLS
        best = torch.cat([(2 * (a[i:min(i + 128, max_rank)] @ b.T) - r_a[i:min(i + 128, max_rank), None]
                           - r_b[None]).argmax(1) for i in range(0, max_rank, 128)])
        return {(i, j) for i, j in enumerate(best.tolist()) if j < max_rank}

    for _ in range(iters):
        xm = xs @ torch.from_numpy(w.astype(np.float32)).T
        xm = xm / xm.norm(dim=1, keepdim=True)
        r_s, r_t = knn_mean(xm, ys), knn_mean(ys, xm)
        s2t = candidates(xm, ys, r_s, r_t)
        t2s = {(i, j) for j, i in candidates(ys, xm, r_t, r_s)}
        dico = np.array(sorted(s2t & t2s))
        w = procrustes(x[dico[:, 0]], y[dico[:, 1]])
    return w


def mapping_bench(args, rows: list, kv: dict) -> None:
    n, d = args.words, args.dim
    x, y, rot = synthetic_pair(n, d)
    x, y = normalize_embeddings(x, "renorm,center,renorm"), normalize_embeddings(y, "renorm,center,renorm")
    cfg = AlignConfig(write_vectors=False)
    adv_cfg = AlignConfig(write_vectors=False, **{f"adv_{k}": v for k, v in
                                                  (("epochs", args.adv_epochs), ("epoch_size", args.adv_epoch_size),
                                                   ("hidden", args.adv_hidden), ("batch", args.adv_batch),
                                                   ("lr", args.adv_lr)) if v})
    train = np.stack([np.arange(0, 5000)] * 2, axis=1)
    test = np.stack([np.arange(5000, 6500)] * 2, axis=1)
    words = [f"w{i}" for i in range(n)]
    quiet = (lambda s: None) if not args.verbose else print

    def p1(w):
        return evaluate_bli(Space(x @ w.T, y, cfg.csls_k, cfg.memory_mb), test, "csls", ks=(1,))[0][1]

    runs = [("procrustes + 5 refinements (ours)", "procrustes_refine",
             lambda: learn_mapping("procrustes-refine", x, y, words, words, train, cfg, quiet)[0])]
    if args.peer:
        runs.append(("procrustes + 5 refinements (MUSE-style peer)", "peer_procrustes_refine",
                     lambda: muse_refine(x, y, procrustes(x[:5000], y[:5000]), cfg.refine_iters,
                                         cfg.refine_max_rank)))
    if args.adversarial:
        runs.append(("adversarial + 5 refinements (ours)", "adversarial",
                     lambda: learn_mapping("adversarial", x, y, words, words, None, adv_cfg, quiet)[0]))
    for name, key, fn in runs:
        with PeakRSS() as mem:
            t0, c0 = time.perf_counter(), time.process_time()
            w = fn()
            sec, cpu = time.perf_counter() - t0, time.process_time() - c0
        p = p1(w)
        err = float(np.abs(w - rot).max())
        load = round(os.getloadavg()[0], 1)
        rows.append([name, n, d, round(sec, 1), round(cpu, 1), load, round(mem.mb), round(p, 4), f"{err:.2e}"])
        kv[f"{key}_s"] = round(sec, 1)
        kv[f"{key}_cpu_s"] = round(cpu, 1)
        kv[f"{key}_p_at_1"] = round(p, 4)
    print(format_table(["mapping", "words", "dim", "seconds", "CPU s (all threads)", "load (1 min)", "peak MB",
                        "P@1 CSLS (ranks 5k-6.5k)", "max |W - R|"], rows,
                       title=f"Learning the map (synthetic rotation), torch threads {torch.get_num_threads()}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="mapping,retrieval", help="mapping, retrieval or both (comma-separated)")
    ap.add_argument("--words", type=int, default=50000, help="mapping: words per language")
    ap.add_argument("--no-peer", dest="peer", action="store_false", help="mapping: skip the MUSE-style peer")
    ap.add_argument("--no-adversarial", dest="adversarial", action="store_false",
                    help="mapping: skip the adversarial run")
    # MUSE's schedule (5 epochs of 1M words, hidden 2048: AlignConfig's defaults, 0 here) takes hours on a
    # 2-core CPU (measured 0.3 s wall a mapping step, 31,250 steps an epoch); the default is a run of minutes
    ap.add_argument("--adv-epochs", type=int, default=2, help="mapping: adversarial epochs (0 = AlignConfig's)")
    ap.add_argument("--adv-epoch-size", type=int, default=100000,
                    help="mapping: words per adversarial epoch (0 = AlignConfig's)")
    ap.add_argument("--adv-hidden", type=int, default=512, help="mapping: discriminator width (0 = AlignConfig's)")
    ap.add_argument("--adv-batch", type=int, default=128, help="mapping: words per side a batch (0 = AlignConfig's)")
    ap.add_argument("--adv-lr", type=float, default=0.5, help="mapping: SGD lr (0 = AlignConfig's)")
    ap.add_argument("--verbose", action="store_true", help="mapping: print the methods' progress lines")
    ap.add_argument("--sizes", default="10000,100000", help="retrieval: vocabulary sizes (both languages)")
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--queries", type=int, default=10000, help="retrieval: source words translated per run")
    ap.add_argument("--rounds", type=int, default=1, help="retrieval: timed rounds per system (median reported)")
    ap.add_argument("--peer-limit-gb", type=float, default=8.0,
                    help="retrieval: skip a peer whose matrices exceed this")
    args = ap.parse_args()
    os.environ.setdefault("XLING_PROGRESS", "0")
    tasks = {t.strip() for t in args.task.split(",")}
    kv: dict = {}
    if "mapping" in tasks:
        mapping_bench(args, [], kv)
    if "retrieval" in tasks:
        retrieval_bench(args, kv)
    print(" ".join(f"{k}={v}" for k, v in kv.items()))


def retrieval_bench(args, kv: dict) -> None:
    rows = []
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


if __name__ == "__main__":
    main()
