"""Which Kneser-Ney order the bits-per-character baseline uses: valid-split bits/char per order and language.

    .venv/bin/python bench/ngram_orders.py runs/demo                   # orders 3 4 5, every valid segment
    .venv/bin/python bench/ngram_orders.py runs/demo --orders 2 3 4 5 6 --split valid --max-tokens 0

For each language of the run's shards: the add-1/2 unigram and interpolated modified Kneser-Ney of each
order, counted on the train split, scored on `--split` (default valid: the choice of `xling.ngram.DEFAULT_ORDER`
must not look at the test split). Prints one row per language, the mean, and the wall-clock seconds each
order took to count and score all languages (fit + score, in this process; a shared machine inflates them).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from xling.ngram import fit_kneser_ney, fit_unigram
from xling.progress import format_table
from xling.shards import Shards


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a run directory with shards/")
    ap.add_argument("--orders", type=int, nargs="+", default=[3, 4, 5])
    ap.add_argument("--split", default="valid")
    ap.add_argument("--max-tokens", type=int, default=0, help="targets scored per language (0: every segment)")
    args = ap.parse_args()
    shards = Shards(args.run / "shards")
    models = {"unigram": lambda lg: fit_unigram(shards, lg)}
    models.update({f"KN {n}": (lambda lg, n=n: fit_kneser_ney(shards, lg, order=n)) for n in args.orders})
    bpc: dict[str, dict[str, float]] = {name: {} for name in models}
    seconds = dict.fromkeys(models, 0.0)
    for lg in shards.langs:
        for name, fit in models.items():
            t0 = time.perf_counter()
            nats, chars = fit(lg).eval_nll(shards, args.split, lg, args.max_tokens)
            seconds[name] += time.perf_counter() - t0
            bpc[name][lg] = nats / math.log(2) / chars
    rows = [[lg, *(f"{bpc[name][lg]:.3f}" for name in models)] for lg in shards.langs]
    rows.append(["mean", *(f"{sum(bpc[name].values()) / len(shards.langs):.3f}" for name in models)])
    rows.append(["seconds", *(f"{seconds[name]:.1f}" for name in models)])
    print(format_table(["lang", *models], rows, title=f"bits per character, {args.split} split of {args.run}"))


if __name__ == "__main__":
    main()
