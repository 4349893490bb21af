"""Benchmark: shard building (`xling.shards.build_shards`) against raw HF `tokenizers` batch encoding.

    .venv/bin/python bench/shards.py                 # default corpus (8 Bible languages), 3 rounds
    .venv/bin/python bench/shards.py --rounds 1 --work /tmp/xb

Builds the default corpus (`build_corpus(CorpusConfig(), ...)`) and trains the default tokenizer once,
caching both under --work (default: $XLING_CACHE/bench-shards). Then, in one process and interleaved per
round, it times over the same lines:
  - xling `build_shards`, end to end (reading files, encoding, writing .bin/.idx/.chars, keys, pairs, meta);
  - raw `Tokenizer.encode_batch_fast` (the call build_shards makes: the honest peer) and `encode_batch` (with
    offsets, slower) over the same lines in the same batch size, with the lines already in memory and the ids
    thrown away (what the Rust tokenizer alone does).
Throughput is MB of UTF-8 corpus text per wall-clock second (the same numerator for all rows), median over
rounds. CPU seconds per MB (all threads of the process) are printed beside it: on a shared, loaded machine
they are the steadier measure of work done. Overhead = 1 - ours / raw in wall-clock MB/s, and ours / raw - 1 in
CPU seconds per MB, against encode_batch_fast first (target: within 10% on CPU time), then encode_batch. No FLOP
count applies (tokenization), so no share of a matmul peak is printed. The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "true"  # the same threading for our pipeline and the raw peer

from xling.corpus import SPLITS, Corpus, CorpusConfig, build_corpus  # noqa: E402
from xling.files import cache_dir  # noqa: E402
from xling.progress import format_table  # noqa: E402
from xling.shards import ShardConfig, build_shards  # noqa: E402
from xling.tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer  # noqa: E402


def prepare(work: Path) -> tuple[Corpus, Path]:
    """The default corpus and tokenizer, built once and reused from `work`."""
    if not (work / "corpus" / "meta.json").is_file():
        build_corpus(CorpusConfig(), work / "corpus")
    corpus = Corpus(work / "corpus")
    if not (work / "tokenizer" / "tokenizer.json").is_file():
        train_tokenizer(corpus, TokenizerConfig(), work / "tokenizer", alpha=CorpusConfig().alpha)
    return corpus, work / "tokenizer"


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of all threads, result) of fn()."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def raw_encode(tok_dir: Path, lines: list[str], batch_size: int, fast: bool) -> None:
    """The raw tokenizer batch-encodes every line (a freshly loaded one, as build_shards loads its own)."""
    tok = load_tokenizer(tok_dir)
    encode = tok.encode_batch_fast if fast else tok.encode_batch
    for i in range(0, len(lines), batch_size):
        encode(lines[i:i + batch_size], add_special_tokens=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=cache_dir() / "bench-shards", help="cache for corpus/tokenizer")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=ShardConfig().batch_size)
    args = ap.parse_args()

    corpus, tok_dir = prepare(args.work)
    lines = [t for s in SPLITS for lg in corpus.langs for t in corpus.texts(s, lg)]
    mb = sum((corpus.path / s / f"{lg}.txt").stat().st_size for s in SPLITS for lg in corpus.langs) / 1e6
    tok = load_tokenizer(tok_dir)
    print(f"corpus: {len(corpus.langs)} languages ({', '.join(corpus.langs)}), {len(lines):,} segments, "
          f"{mb:.1f} MB; tokenizer vocab {tok.get_vocab_size():,}; batch {args.batch_size}; "
          f"{os.cpu_count()} CPUs; {args.rounds} rounds")

    wall: dict[str, list[float]] = {"ours": [], "raw": [], "raw_fast": []}
    cpu: dict[str, list[float]] = {"ours": [], "raw": [], "raw_fast": []}
    cfg = ShardConfig(batch_size=args.batch_size)
    for _ in range(args.rounds):
        for name, fn in [("ours", lambda: build_shards(corpus, tok_dir, cfg, args.work / "shards")),
                         ("raw", lambda: raw_encode(tok_dir, lines, args.batch_size, fast=False)),
                         ("raw_fast", lambda: raw_encode(tok_dir, lines, args.batch_size, fast=True))]:
            w, c, out = timed(fn)
            wall[name].append(w)
            cpu[name].append(c)
            if name == "ours":
                meta = out

    rate = {k: mb / statistics.median(v) for k, v in wall.items()}
    cpu_mb = {k: statistics.median(v) / mb for k, v in cpu.items()}
    ntok = sum(c["tokens"] for s in meta["splits"].values() for c in s.values())
    names = {"raw_fast": "raw tokenizers encode_batch_fast (peer: the call we make)",
             "raw": "raw tokenizers encode_batch (with offsets)", "ours": "xling build_shards, end to end"}
    rows = [[label, rate[k], rate[k] / rate["raw_fast"], cpu_mb[k], cpu_mb[k] / cpu_mb["raw_fast"],
             rate[k] / rate["raw"]] for k, label in names.items()]
    print(format_table(["pipeline", "MB/s", "x raw fast", "CPU s/MB", "CPU x raw fast", "x raw"], rows,
                       title=f"shard building vs raw encoding ({ntok:,} tokens, median of {args.rounds})"))
    overhead = 1 - rate["ours"] / rate["raw"]
    fast_overhead = 1 - rate["ours"] / rate["raw_fast"]
    fast_cpu = cpu_mb["ours"] / cpu_mb["raw_fast"] - 1
    print(f"overhead of build_shards vs encode_batch_fast (the call it makes; target: CPU within 10%): "
          f"wall {fast_overhead:+.1%}, CPU {fast_cpu:+.1%}; vs encode_batch: wall {overhead:+.1%}, "
          f"CPU {cpu_mb['ours'] / cpu_mb['raw'] - 1:+.1%}")
    print(f"shard_mb_s={rate['ours']:.3f} raw_fast_mb_s={rate['raw_fast']:.3f} overhead_fast={fast_overhead:.3f} "
          f"cpu_overhead_fast={fast_cpu:.3f} raw_encode_mb_s={rate['raw']:.3f} tokenizer_overhead={overhead:.3f}")


if __name__ == "__main__":
    main()
