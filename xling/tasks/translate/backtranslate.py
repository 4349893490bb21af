"""Back-translation (Sennrich et al. 2016): text of a language that has no translations, translated into a pivot
language by a run's own translation model, gives synthetic pairs for the pair objectives.

    n = back_translate("runs/tl/back-translation/phase1", "tl", "en", "synthetic.en.jsonl", max_lines=2000)

Each train line of `lang` in the run's corpus becomes one JSON Lines record `{"lang": pivot, "id": <the line's
key>, "text": <its translation>}`: read back by the corpus stage (source jsonl, corpus.base = that corpus,
corpus.synthetic = true), the translation joins the pivot language's train text under the original line's key,
so the two align as a pair, and the corpus meta counts it as synthetic. Only train lines are translated (a key
keeps its split), so no valid or test line gets a partner. Greedy decoding: a translation a step, as fast as the
model decodes.

Not every translation is kept (`keep_translations`): one that is empty, one the model wrote for more than one
source line (a weak model writes the same few sentences for most inputs: as pairs they would teach that every
line means "The end."), and one whose length is off the two languages' usual ratio by more than LENGTH_FACTOR
(cut short, or looping until the length limit) are left out and counted.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

from xling.corpus import Corpus
from xling.files import atomic_write_text
from xling.progress import progress
from xling.tasks.translate.command import load_translator
from xling.tasks.translate.config import TranslateConfig
from xling.tasks.translate.decoding import translate

BATCH = 64  # lines translated per call (the progress bar's step)
LENGTH_FACTOR = 2.0  # a translation's length may differ this many times from the usual ratio before it is dropped
RATIO_LINES = 10_000  # train lines of each language whose mean length gives the usual ratio


def keep_translations(sources: list[str], outputs: list[str], ratio: float) -> tuple[list[bool], dict]:
    """Which translations to keep as synthetic pairs, and why the others were dropped (counts).

    ratio: characters of a pivot line per character of a source line, as usual for the two languages (the ratio of
    their mean line lengths). Dropped: empty; written for more than one source line (every copy); length / source
    length outside [ratio / LENGTH_FACTOR, ratio * LENGTH_FACTOR].
    """
    seen = Counter(t.strip() for t in outputs)
    keep, why = [], Counter()
    for src, out in zip(sources, outputs, strict=True):
        text = out.strip()
        if not text:
            why["empty"] += 1
        elif seen[text] > 1:
            why["repeated"] += 1
        elif not ratio / LENGTH_FACTOR <= len(text) / max(len(src), 1) <= ratio * LENGTH_FACTOR:
            why["length"] += 1
        else:
            keep.append(True)
            continue
        keep.append(False)
    return keep, {k: why[k] for k in ("empty", "repeated", "length")}


def back_translate(run: str | Path, lang: str, pivot: str, out: str | Path, *, max_lines: int = 2000,
                   cfg: TranslateConfig | None = None) -> dict:
    """Translate the first `max_lines` train lines of `lang` in `run`'s corpus into `pivot` with `run`'s
    fine-tuned translator (`<run>/translate`); write them to `out` (JSON Lines, atomically). Returns counts."""
    run = Path(run)
    corpus = Corpus(run / "corpus")
    texts, keys = corpus.texts("train", lang)[:max_lines], corpus.keys("train", lang)[:max_lines]
    model, tok = load_translator(run / "translate")
    cfg = replace(cfg or TranslateConfig(), num_beams=1)
    outs = []
    with progress(total=len(texts), desc=f"back-translate {lang}->{pivot}", unit="line") as bar:
        for start in range(0, len(texts), BATCH):
            outs += translate(model, tok, texts[start:start + BATCH], lang, pivot, cfg)
            bar.update(len(texts[start:start + BATCH]))
    ratio = _mean_length(corpus.texts("train", pivot)) / max(_mean_length(corpus.texts("train", lang)), 1e-9)
    keep, dropped = keep_translations(texts, outs, ratio)
    lines = [json.dumps({"lang": pivot, "id": key, "text": text.strip()}, ensure_ascii=False) + "\n"
             for key, text, ok in zip(keys, outs, keep, strict=True) if ok]
    atomic_write_text(out, "".join(lines))
    return {"translated": len(texts), "written": len(lines), **dropped, "ratio": round(ratio, 3), "path": str(out)}


def _mean_length(texts: list[str]) -> float:
    """Mean characters a line of the first RATIO_LINES lines."""
    head = texts[:RATIO_LINES]
    return sum(map(len, head)) / max(len(head), 1)
