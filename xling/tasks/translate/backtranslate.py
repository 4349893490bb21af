"""Back-translation (Sennrich et al. 2016): text of a language that has no translations, translated into a pivot
language by a run's own translation model, gives synthetic pairs for the pair objectives.

    n = back_translate("runs/tl/back-translation/phase1", "tl", "en", "synthetic.en.jsonl", max_lines=2000)

Each train line of `lang` in the run's corpus becomes one JSON Lines record `{"lang": pivot, "id": <the line's
key>, "text": <its translation>}`: read back by the corpus stage (source jsonl, corpus.base = that corpus,
corpus.synthetic = true), the translation joins the pivot language's train text under the original line's key,
so the two align as a pair, and the corpus meta counts it as synthetic. Only train lines are translated (a key
keeps its split), so no valid or test line gets a partner. Greedy decoding: a translation a step, as fast as the
model decodes; an empty translation is left out.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from xling.corpus import Corpus
from xling.files import atomic_write_text
from xling.progress import progress
from xling.tasks.translate.command import load_translator
from xling.tasks.translate.config import TranslateConfig
from xling.tasks.translate.decoding import translate

BATCH = 64  # lines translated per call (the progress bar's step)


def back_translate(run: str | Path, lang: str, pivot: str, out: str | Path, *, max_lines: int = 2000,
                   cfg: TranslateConfig | None = None) -> dict:
    """Translate the first `max_lines` train lines of `lang` in `run`'s corpus into `pivot` with `run`'s
    fine-tuned translator (`<run>/translate`); write them to `out` (JSON Lines, atomically). Returns counts."""
    run = Path(run)
    corpus = Corpus(run / "corpus")
    texts, keys = corpus.texts("train", lang)[:max_lines], corpus.keys("train", lang)[:max_lines]
    model, tok = load_translator(run / "translate")
    cfg = replace(cfg or TranslateConfig(), num_beams=1)
    lines, empty = [], 0
    with progress(total=len(texts), desc=f"back-translate {lang}->{pivot}", unit="line") as bar:
        for start in range(0, len(texts), BATCH):
            outs = translate(model, tok, texts[start:start + BATCH], lang, pivot, cfg)
            for key, text in zip(keys[start:start + BATCH], outs, strict=True):
                if text.strip():
                    lines.append(json.dumps({"lang": pivot, "id": key, "text": text}, ensure_ascii=False) + "\n")
                else:
                    empty += 1
            bar.update(len(outs))
    atomic_write_text(out, "".join(lines))
    return {"translated": len(texts), "written": len(lines), "empty": empty, "path": str(out)}
