"""The corpus stage on large synthetic JSON Lines input: peak memory as the input grows, and worker speed-up.

    python bench/corpus_scale.py                          # sizes 0.5 1 2 4 GB, then 1 vs 2 workers on 256 MB
    python bench/corpus_scale.py --sizes 0.05 0.1 --speedup-mb 64   # a quick look

Each run is `xling corpus --source jsonl` in a process of its own; its peak resident memory is the largest sum,
over its process tree (workers included), of VmRSS, polled every 50 ms. The input is written to a temporary
folder (never kept): one object per line, 3 languages, ids on two lines of three, sentences of 4-30 words (two
halves of 2-15) from a Zipf-like 50,000-word vocabulary, 5% exact repeats. The speed-up table runs the same
input with 1 and 2 workers and checks the two outputs are byte for byte equal; then the shard stage on that
corpus (a tokenizer trained on the default sample), 1 and 2 workers, outputs compared the same way. Last line:
`name=value` pairs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

XLING = [sys.executable, "-m", "xling"]


def write_jsonl(path: Path, size_bytes: int, seed: int = 0) -> int:
    """Write ~size_bytes of synthetic JSON Lines; returns the number of lines.

    A sentence is two halves of 2-15 words each, drawn from 100,000 halves made of a Zipf-like 50,000-word
    vocabulary (10^10 combinations: repeats come from the 5% drawn from recent lines, not from chance); letters
    only, so each line is formatted without escaping (~1 s per 10^6 lines instead of json.dumps' ~30)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz"))
    vocab = ["".join(rng.choice(letters, size=int(rng.integers(2, 10)))) for _ in range(50_000)]
    weights = 1 / np.arange(1, len(vocab) + 1)
    weights /= weights.sum()
    words = rng.choice(len(vocab), size=(100_000, 15), p=weights)
    halves = [" ".join(vocab[i] for i in row[: int(k)]) for row, k in zip(words, rng.integers(2, 16, 100_000),
                                                                          strict=True)]
    langs = ["en", "fr", "de"]
    n = written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size_bytes:
            first, second = rng.integers(len(halves), size=(2, 65_536))
            again = rng.random(65_536) < 0.05  # a repeat of a line a few thousand lines back
            first[again], second[again] = np.roll(first, 4096)[again], np.roll(second, 4096)[again]
            lines = []
            for i, j in zip(first.tolist(), second.tolist(), strict=True):
                head = f'{{"lang": "{langs[n % 3]}", "text": "{halves[i].capitalize()} {halves[j]}."'
                lines.append(head + (f', "id": "doc{n}"}}\n' if n % 3 else "}\n"))
                n += 1
            block = "".join(lines)
            f.write(block)
            written += len(block)
    return n


def tree_rss(root: int) -> int:
    """Sum of VmRSS (bytes) of `root` and every descendant process (found through /proc/PID/task/TID/children,
    not a scan of all of /proc: the poll itself must not take a core's share from the run it measures)."""
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            pass
    return total


def run_corpus(src: Path, run: Path, workers: int, poll: bool = True) -> tuple[float, int]:
    """(wall seconds, peak tree RSS bytes; 0 without `poll`) of one `xling corpus` run."""
    cmd = [*XLING, "corpus", "--run", str(run), "--source", "jsonl", "--paths", str(src), "--workers", str(workers),
           "--force", "--overwrite", "corpus.valid_fraction=0.01", "corpus.test_fraction=0.01"]
    log = run.parent / f"{run.name}.log"  # a file, not a pipe: a pipe nobody reads fills and stalls the run
    t0 = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        peak = 0
        while poll and proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.05)
        proc.wait()
    seconds = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"xling corpus failed: {log.read_text()[-2000:]}")
    return seconds, peak


def run_shard(run: Path, workers: int) -> float:
    """Wall seconds of one `xling shard` run over the corpus and tokenizer in `run`."""
    t0 = time.perf_counter()
    subprocess.run([*XLING, "shard", "--run", str(run), "--workers", str(workers), "--force", "--overwrite"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def tree_digest(root: Path) -> str:
    """A digest of every file under `root`; meta.json without its "throughput" (the shards' timings)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            data = p.read_bytes()
            if p.name == "meta.json":
                meta = json.loads(data)
                meta.pop("throughput", None)
                data = json.dumps(meta, sort_keys=True).encode()
            h.update(data)
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=float, nargs="*", default=[0.5, 1, 2, 4], help="input sizes in GB")
    ap.add_argument("--workers", type=int, default=2, help="workers for the memory runs")
    ap.add_argument("--speedup-mb", type=float, default=256, help="input size of the 1-vs-2-worker runs (0: skip)")
    args = ap.parse_args()
    print(f"CPU: {_cpu()}, {os.cpu_count()} cores")
    out = {}
    with tempfile.TemporaryDirectory(prefix="xling-corpus-bench-") as tmp:
        tmp = Path(tmp)
        rows = []
        for gb in args.sizes:
            src = tmp / "in.jsonl"
            lines = write_jsonl(src, int(gb * 1e9))
            seconds, peak = run_corpus(src, tmp / "run", args.workers)
            rows.append((gb, lines, seconds, peak))
            print(f"{gb:5.2f} GB  {lines:>11,} lines  {args.workers} workers  {seconds:7.1f} s  "
                  f"{src.stat().st_size / 1e6 / seconds:6.1f} MB/s  peak RSS {peak / 2**20:7.0f} MiB", flush=True)
            src.unlink()
        if rows:
            peaks = [r[3] for r in rows]
            out["peak_rss_mib_max"] = round(max(peaks) / 2**20)
            out["peak_rss_growth"] = round(peaks[-1] / peaks[0], 3)
        if args.speedup_mb:
            src = tmp / "in.jsonl"
            write_jsonl(src, int(args.speedup_mb * 1e6), seed=1)
            times, digests = {}, {}
            for workers in (1, 2, 1, 2):  # interleaved: drift on a shared machine hits both
                seconds, _ = run_corpus(src, tmp / f"run{workers}", workers, poll=False)
                times.setdefault(workers, []).append(seconds)
                digests[workers] = tree_digest(tmp / f"run{workers}" / "corpus")
            best = {w: min(t) for w, t in times.items()}
            print(f"{args.speedup_mb:.0f} MB: 1 worker {best[1]:.1f} s, 2 workers {best[2]:.1f} s "
                  f"(best of 2 each): {best[1] / best[2]:.2f}x; outputs equal: {digests[1] == digests[2]}")
            out.update(speedup=round(best[1] / best[2], 3), same_output=digests[1] == digests[2],
                       mb_per_s_1=round(args.speedup_mb / best[1], 2), mb_per_s_2=round(args.speedup_mb / best[2], 2))
            # the shard stage on that corpus: a tokenizer trained on its default sample, then 1 vs 2 workers
            run = tmp / "run1"
            subprocess.run([*XLING, "tokenizer", "--run", str(run), "--force", "--overwrite"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times, digests = {}, {}
            for workers in (1, 2, 1, 2):
                times.setdefault(workers, []).append(run_shard(run, workers))
                digests[workers] = tree_digest(run / "shards")
            best = {w: min(t) for w, t in times.items()}
            print(f"shard stage on that corpus: 1 worker {best[1]:.1f} s, 2 workers {best[2]:.1f} s: "
                  f"{best[1] / best[2]:.2f}x; outputs equal: {digests[1] == digests[2]}")
            out.update(shard_speedup=round(best[1] / best[2], 3), shard_same_output=digests[1] == digests[2])
    print(" ".join(f"{k}={v}" for k, v in out.items()))


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    main()
