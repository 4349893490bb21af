"""Back-translation on/off for a language added with text only: en<->NEW retrieval on held-out Bible verses.

    python bench/add_language_bt.py --base runs/btbase --lang tl --steps 60 --work /tmp/bt   # base run trained first

1. The new language's text: the Bible translation's verses of the base's train chapters (the base's chapter split,
   corpus.valid/test_fraction of its config), one a line with no alignment key, as `--source text` reads it.
2. `xling add-language --source text` twice from the same base and the same number of optimizer steps:
   without back-translation (`--steps`), and with it (`--back-translate`: `--steps / 2` before and after the
   translation fine-tune of `--ft-steps` steps and the back-translation of `--bt-lines` lines).
3. Each run's sentence vectors (`xling embed` rules: its retrieval layer, specials as the default) of the test
   chapters' verses in the pivot and the new language, aligned by their Bible keys (which the runs never saw):
   top-1 retrieval each way, beside chance (1 / verses) and the same for the base's languages (en<->fr), so a
   change in the new language is read beside what the old ones kept.
4. How good the back-translations were: chrF against the pivot verses they translate (by the same keys), beside
   the same translations against those verses shuffled.
Last line: `name=value` pairs.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

XLING = [sys.executable, "-m", "xling"]


def sh(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([*XLING, *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="a trained run (bible source) without --lang")
    ap.add_argument("--lang", default="tl")
    ap.add_argument("--pivot", default="en")
    ap.add_argument("--other", default="fr", help="an old language, to read forgetting beside")
    ap.add_argument("--steps", type=int, default=60, help="continued-pretraining steps of each run, in all")
    ap.add_argument("--bt-lines", type=int, default=2000)
    ap.add_argument("--ft-steps", type=int, default=300, help="steps of the translation fine-tune before translating")
    ap.add_argument("--work", default="/tmp/xling-bt", help="folder for the text, the runs and the held-out corpus")
    args = ap.parse_args()

    from xling.corpus import Corpus
    from xling.encode import embed_texts, top1_accuracy
    from xling.tasks.retrieval.retrieve import load_encoder, resolve_layer

    work, base = Path(args.work), Path(args.base)
    work.mkdir(parents=True, exist_ok=True)
    held = work / "heldout"  # the base's config (its chapter split) with the new language: the keys to align by
    if not (held / "corpus" / "meta.json").is_file():
        sh("corpus", "--run", str(held), "--config", str(base / "config.toml"),
           f'corpus.langs=["{args.pivot}", "{args.other}", "{args.lang}"]')
    corpus = Corpus(held / "corpus")
    text = work / f"{args.lang}.txt"
    text.write_text("".join(t + "\n" for t in corpus.texts("train", args.lang)), encoding="utf-8")
    common = ["--run", str(base), "--lang", args.lang, "--minutes", "0"]
    settings = ["train.eval_every=0", "translate.compile=false", "translate.max_minutes=0",
                f"translate.max_steps={args.ft_steps}"]
    source = ["--source", "text", "--paths", str(text)]  # last: --paths takes every word after it
    runs = {"without": work / "without", "with back-translation": work / "with-bt"}
    seconds = {}
    if not (runs["without"] / "checkpoints").is_dir():
        seconds["without"] = sh("add-language", *common, "--out", str(runs["without"]), *settings,
                                f"train.max_steps={args.steps}", *source)
    if not (runs["with back-translation"] / "checkpoints").is_dir():
        seconds["with back-translation"] = sh(
            "add-language", *common, "--out", str(runs["with back-translation"]), "--back-translate",
            "--pivot", args.pivot, "--bt-lines", str(args.bt_lines), *settings, f"train.max_steps={args.steps // 2}",
            *source)

    def aligned(a: str, b: str) -> tuple[list[str], list[str]]:
        by_key = dict(zip(corpus.keys("test", b), corpus.texts("test", b), strict=True))
        keys = [k for k in corpus.keys("test", a) if k in by_key]
        ta = dict(zip(corpus.keys("test", a), corpus.texts("test", a), strict=True))
        return [ta[k] for k in keys], [by_key[k] for k in keys]

    rows, out = [], {}
    for name, run in [("base", base), *runs.items()]:
        model, tok = load_encoder(run)
        layer = resolve_layer(run, model, None)
        row = [name]
        for a, b in ((args.pivot, args.lang), (args.pivot, args.other)):
            if name == "base" and b == args.lang:
                row += ["-", "-"]
                continue
            xa, xb = aligned(a, b)
            va, vb = embed_texts(model, tok, xa, a, layer=layer), embed_texts(model, tok, xb, b, layer=layer)
            fwd, bwd = top1_accuracy(va, vb), top1_accuracy(vb, va)
            row += [f"{fwd:.3f}", f"{bwd:.3f}"]
            out[f"{name.split()[0]}_{a}{b}"] = round((fwd + bwd) / 2, 4)
        rows.append(row)
    quality = translation_quality(runs["with back-translation"], corpus, args.lang, args.pivot)
    out.update(quality)
    n = len(aligned(args.pivot, args.lang)[0])
    print(f"{n} test verses {args.pivot}-{args.lang} (chance {1 / n:.4f}); {args.steps} steps each run; "
          f"seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    print(f"| run | {args.pivot}->{args.lang} | {args.lang}->{args.pivot} | {args.pivot}->{args.other} | "
          f"{args.other}->{args.pivot} |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"the {quality['bt_kept']:,} kept back-translations against the {args.pivot} verses they translate: chrF "
          f"{quality['bt_chrf']:.1f}; against the {args.pivot} verses shuffled (what unrelated {args.pivot} scores) "
          f"{quality['bt_chrf_shuffled']:.1f}")
    print(" ".join(f"{k}={v}" for k, v in out.items()) + f" chance={1 / n:.4f} n={n}")


def translation_quality(run: Path, corpus, lang: str, pivot: str) -> dict:
    """chrF of the kept back-translations against the true pivot verses of the lines they translate (the Bible keys
    the run never saw: the synthetic id `<lang>:<i>` is line i of the text file, written from the held-out corpus's
    train verses in order), beside the same hypotheses against those references shuffled (the baseline: fluent
    pivot text about something else)."""
    from xling.metrics import chrf

    keys = corpus.keys("train", lang)
    truth = dict(zip(corpus.keys("train", pivot), corpus.texts("train", pivot), strict=True))
    hyps, refs = [], []
    for line in (Path(f"{run}.phase1") / f"back-translated.{pivot}.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        key = keys[int(record["id"].rsplit(":", 1)[1]) - 1]
        if key in truth:
            hyps.append(record["text"])
            refs.append(truth[key])
    shuffled = refs[:]
    random.Random(0).shuffle(shuffled)
    return {"bt_kept": len(hyps), "bt_chrf": round(chrf(hyps, [refs], pivot)[0], 2),
            "bt_chrf_shuffled": round(chrf(hyps, [shuffled], pivot)[0], 2)}


if __name__ == "__main__":
    main()
