"""The demo report's word-alignment evaluation: bilingual lexicon induction en -> X on the run's corpus.

    xling evaluate --run runs/demo --only align    # registered as evaluation "align" (order 90)
    evaluate_alignment("runs/demo", corpus, model, tokenizer)   # the same with your own settings

Two kinds of word vectors per language, each mapped en -> X and scored on a held-out dictionary split:
  static   skip-gram vectors trained on the corpus's train split (gensim; cached in
           `<run>/align/demo/vectors/`, so only the first evaluation pays for them);
  model    the run's own input embeddings of each word (mean of its subword pieces): all languages
           share one embedding matrix, so the identity map is the baseline Procrustes must beat.
Dictionaries are FreeDict's (when the Debian package is installed; cached in `<run>/align/demo/dicts/` and,
parsed, per user: `xling.tasks.align.dictionaries.freedict_pairs`). A pair without one is skipped with the package
to install, and so is a pair whose test split holds fewer than MIN_TEST_WORDS source words: no `align.*`
key is written for it (CLDR names, the fallback of `xling align`, left 5-7 test words here and a P@1 of 0.000
that read as a result). A Bible is a tiny corpus for static vectors (MUSE trains on Wikipedia), so the
numbers are low; the dictionary bands are fitted to the vocabulary (`xling.tasks.align.rank_bands`: on a
Bible, test = the 1,000 most frequent source words, the only ones with usable vectors at this size).

Metrics: `align.p_at_{1,5,10}.<pair>` (static vectors, supervised Procrustes, CSLS),
`align.p_at_1.<pair>.{supervised,unsupervised}` and per method `align.p_at_1.<pair>.<method>.<nn|csls>`
(see `xling.tasks.align.align_metrics`), `align.p_at_1.<pair>.copy` (the copy-the-word baseline),
`align.test_words.<pair>`, `align.items` (test words of all measured pairs),
`align.p_at_1.<pair>.model.{identity,procrustes}`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from xling.errors import XlingError
from xling.evaluate import EvalContext, evaluation, skipped
from xling.tasks.align.command import align_pairs
from xling.tasks.align.config import AlignConfig, rank_bands
from xling.tasks.align.csls import Space, evaluate_bli
from xling.tasks.align.dictionaries import ISO3, dictionary_pairs, filter_pairs, split_by_rank
from xling.tasks.align.mapping import normalize_embeddings, procrustes
from xling.tasks.align.vectors import Vectors, VectorsConfig, model_word_vectors, read_vec

PIVOT = "en"
# en-fr, en-de, en-ru (Latin and Cyrillic); en-es and en-ar by `xling align` (each adds ~20 s of vector training
# to the demo)
TARGETS = ("fr", "de", "ru")  # FreeDict's parsed pairs are cached per user (en-de: ~10 s once)
DICTIONARY = "freedict"
# The demo's budget decides the epochs: 10 lift en-fr CSLS P@1 from 0.08 (3 epochs) to 0.46 on Bible-sized
# text, but cost ~20 s of one core per language; this evaluation then took 121 s of the fresh-clone demo
# (15.0 min in all, over its 15-minute budget) against ~35 s with 3. `xling vectors` / `xling align` use
# VectorsConfig's defaults (10 epochs, d 300) for real numbers.
VECTORS = VectorsConfig(method="skipgram", dim=100, epochs=3, min_count=3)
# dictionary bands fitted to the vocabulary (AlignConfig's default; on the Bible's 5,000 kept words: test
# ranks [0, 1000], train [1000, 5000])
ALIGN = AlignConfig(methods=["procrustes", "identical"], max_vocab=5000, refine_iters=2, refine_max_rank=3000,
                    select_max_rank=3000, select_pairs=1000, write_vectors=False)
# a P@1 over fewer held-out words moves by 0.01 or more with one word: a note in the report, not a number
MIN_TEST_WORDS = 100
TITLE = "Word-embedding alignment (lexicon induction)"


def freedict_package(src: str, tgt: str) -> str:
    """The Debian package of FreeDict's src -> tgt dictionary (named by three-letter codes: eng-fra)."""
    return f"dict-freedict-{ISO3.get(src, src)}-{ISO3.get(tgt, tgt)}"


def no_dictionary(pivot: str, tgt: str, dictionary: str) -> str:
    """Why a pair has no dictionary, and what to install."""
    if dictionary == "freedict":
        return f"no dictionary for {pivot}-{tgt}; `apt-get install {freedict_package(pivot, tgt)}`"
    return f"no dictionary for {pivot}-{tgt} ({dictionary.replace('{src}', pivot).replace('{tgt}', tgt)}: none found)"


def model_vectors_bli(vs: Vectors, vt: Vectors, pairs: list[tuple[str, str]],
                      cfg: AlignConfig) -> dict[str, Any] | None:
    """P@1/5/10 (CSLS) of model word vectors (`model_word_vectors`; rows in frequency order), under
    the identity map and under Procrustes fitted on the train split. None if the test split is empty."""
    idx, _ = filter_pairs(pairs, vs.index, vt.index)
    train, test = split_by_rank(idx, *rank_bands(cfg, len(vs.words)))
    if len(test) == 0:
        return None
    x, y = normalize_embeddings(vs.vecs, cfg.normalize), normalize_embeddings(vt.vecs, cfg.normalize)
    out: dict[str, Any] = {"test_words": len(np.unique(test[:, 0]))}
    maps = {"identity": np.eye(x.shape[1])}
    if len(train):
        maps["procrustes"] = procrustes(x[train[:, 0]], y[train[:, 1]])
    for name, w in maps.items():
        p, _, _ = evaluate_bli(Space(x @ w.T, y, cfg.csls_k, cfg.memory_mb), test, "csls")
        out[name] = p
    return out


def evaluate_alignment(run_dir: str | Path, corpus, model=None, tokenizer=None, *, pivot: str = PIVOT,
                       targets: tuple[str, ...] = TARGETS, dictionary: str = DICTIONARY,
                       vectors_cfg: VectorsConfig = VECTORS, cfg: AlignConfig = ALIGN,
                       min_test_words: int = MIN_TEST_WORDS, log: Callable[[str], None] = print) -> dict:
    """Lexicon induction pivot -> each target in the corpus that has a dictionary; outputs in
    `<run_dir>/align/demo/`. Returns an evaluation result: {"metrics", "sections"} (see xling.evaluate), with
    "skipped_parts" {pair: why} for the pairs it could not measure, or "skipped" when it measured none."""
    out_dir = Path(run_dir) / "align" / "demo"
    notes, tgts, gaps = [], [], {}  # gaps: {pair: why it has no number}
    if pivot not in corpus.langs:
        return skipped(f"no {pivot} in the corpus: nothing to align", TITLE)
    for t in targets:
        if t not in corpus.langs:
            continue
        # the named dictionary only: CLDR's names would leave a handful of test words (see MIN_TEST_WORDS)
        if dictionary_pairs(dictionary, pivot, t, out_dir / "dicts", log=lambda s: None, fallback=None) is None:
            gaps[f"{pivot}-{t}"] = no_dictionary(pivot, t, dictionary)
            continue
        tgts.append(t)
    if not tgts:
        return _skipped_all(gaps, targets, dictionary, vectors_cfg, cfg)
    # one pair at a time: a pair that no method can align (a dictionary without train-rank words, another
    # script and so no identical strings) is a note in the report, not the end of the demo
    results = {}
    for t in tgts:
        try:
            res = align_pairs(corpus.path, out_dir, pivot, [t], vectors_cfg=vectors_cfg, cfg=cfg,
                              dictionary=dictionary, log=log)
        except XlingError as e:
            gaps[f"{pivot}-{t}"] = f"no alignment ({e})"
            continue
        for pair, r in res.items():
            d = r.get("dictionary")
            if d is None:
                gaps[pair] = f"no pair of the {pair} dictionary has both words in the vocabularies"
            elif d["test_words"] < min_test_words:
                gaps[pair] = (f"{d['test_words']} test words in source ranks {d['test_ranks']} (fewer than "
                              f"{min_test_words}: not a measurement); a larger dictionary or corpus")
            else:
                results[pair] = r
    metrics: dict[str, float] = {}
    rows, bands = [], {}
    for pair, res in results.items():
        methods = res["methods"]
        head = next((m for m in ("procrustes-refine", "procrustes") if "csls" in methods.get(m, {})), None)
        if head is None:
            gaps[pair] = f"no supervised P@k (no dictionary pair in the test ranks {res['dictionary']['test_ranks']})"
            continue
        metrics.update(res["metrics"])
        for k in (1, 5, 10):
            metrics[f"align.p_at_{k}.{pair}"] = methods[head]["csls"][f"p@{k}"]
        d = res["dictionary"]
        notes.append(f"{pair}: test = source ranks {d['test_ranks']} ({d['test_words']:,} words), train = "
                     f"{d['train_ranks']} ({d['train_words']:,} words); copying the word itself gets P@1 "
                     f"{d['copy_p_at_1']:.3f}.")
        for m, e in methods.items():
            if "csls" in e:
                rows.append([pair, "static", m, d["test_words"], e["nn"]["p@1"], e["csls"]["p@1"], e["csls"]["p@5"],
                             e["csls"]["p@10"], round(e["seconds"], 1)])
        # the method with held-out words in most bands (supervised ones only have the test ranks)
        m = max(res["bands"], key=lambda m: (len(res["bands"][m]), m == head), default=None)
        if m is not None:
            bands[f"{pair} {m}"] = [[int(b["band"].split("-")[1]), b["p@1"]] for b in res["bands"][m]]
    measured = [p for p in results if p not in gaps]
    if not measured:
        return _skipped_all(gaps, targets, dictionary, vectors_cfg, cfg)
    metrics["align.items"] = int(sum(results[p]["dictionary"]["test_words"] for p in measured))
    if model is not None and tokenizer is not None:
        model_vecs: dict[str, Vectors] = {}  # the static vocabularies' words, read back from the cache

        def vectors_of(lang: str) -> Vectors:
            if lang not in model_vecs:
                words = read_vec(out_dir / "vectors" / f"{lang}.vec", max_words=cfg.max_vocab).words
                model_vecs[lang] = model_word_vectors(model, tokenizer, words, mode="input")
            return model_vecs[lang]

        for pair in measured:
            t0 = time.perf_counter()
            tgt = pair.split("-", 1)[1]
            mv = model_vectors_bli(vectors_of(pivot), vectors_of(tgt),
                                   dictionary_pairs(dictionary, pivot, tgt, out_dir / "dicts", log=lambda s: None,
                                                    fallback=None), cfg)
            if mv is None:
                continue
            for name in ("identity", "procrustes"):
                if name in mv:
                    metrics[f"align.p_at_1.{pair}.model.{name}"] = mv[name][1]
                    rows.append([pair, "model input", name, mv["test_words"], "-", mv[name][1], mv[name][5],
                                 mv[name][10], round(time.perf_counter() - t0, 1)])
    notes += [f"{pair}: skipped: {why}." for pair, why in gaps.items()]
    out = {"metrics": metrics, "sections": [_section(notes, rows, bands, vectors_cfg, cfg)]}
    if gaps:
        out["skipped_parts"] = gaps
    return out


def _skipped_all(gaps: dict[str, str], targets: tuple[str, ...], dictionary: str, vectors_cfg: VectorsConfig,
                 cfg: AlignConfig) -> dict:
    """No pair measured: one reason for the summary (one apt-get line for every missing FreeDict package)."""
    if not gaps:
        return skipped(f"none of {', '.join(targets)} is in the corpus", TITLE)
    missing = [p for p, why in gaps.items() if why.startswith("no dictionary for")]
    if dictionary == "freedict" and len(missing) == len(gaps):
        pkgs = " ".join(freedict_package(*p.split("-", 1)) for p in missing)
        reason = f"no dictionary for {', '.join(missing)}; `apt-get install {pkgs}`"
    else:
        reason = "; ".join(f"{p}: {why}" for p, why in gaps.items())
    out = skipped(reason)
    out["sections"] = [_section([f"Skipped: {reason}."], [], {}, vectors_cfg, cfg)]
    return out


def _section(notes: list[str], rows: list, bands: dict, vectors_cfg: VectorsConfig = VECTORS,
             cfg: AlignConfig = ALIGN) -> dict:
    given = f"test = ranks {cfg.test_ranks}, train = ranks {cfg.train_ranks}" if cfg.test_ranks else \
        "bands fitted to the source vocabulary (xling.tasks.align.rank_bands)"
    text = (f"Bilingual lexicon induction: each source word's top-k translations by CSLS (k={cfg.csls_k}) after "
            f"mapping its vector into the target space; P@k = share of test words with a dictionary "
            f"translation in the top k. Static vectors: {vectors_cfg.method}, d={vectors_cfg.dim}, "
            f"{vectors_cfg.epochs} epochs on the train split. Dictionary split by source frequency rank: "
            f"{given}. Methods: procrustes (train "
            f"dictionary), identical (unsupervised: shared strings as seed, then {cfg.refine_iters} "
            f"refinement rounds); the {cfg.max_vocab:,} most frequent words per language; "
            f"model input = the model's own subword embeddings.")
    blocks: list[dict] = [{"kind": "text", "text": " ".join([text, *notes])}]
    if rows:
        blocks.append({"kind": "table", "header": ["pair", "vectors", "method", "test words", "NN P@1", "CSLS P@1",
                                                   "CSLS P@5", "CSLS P@10", "seconds"], "rows": rows})
    if any(bands.values()):
        blocks.append({"kind": "lines", "name": "align_bands", "series": bands,
                       "xlabel": "source frequency rank (upper end of band)", "ylabel": "P@1 (CSLS)",
                       "title": "Word translation accuracy by word frequency (static vectors, held-out words)"})
    return {"title": TITLE, "blocks": blocks}


@evaluation("align", order=90)
def eval_align(ctx: EvalContext) -> dict:
    try:
        import gensim  # noqa: F401
    except ImportError:
        return skipped("static vectors need gensim; pip install 'xling[align]'", TITLE)
    return evaluate_alignment(ctx.run_dir, ctx.corpus, ctx.model, ctx.tokenizer)


__all__ = ["evaluate_alignment", "model_vectors_bli", "eval_align", "no_dictionary", "VECTORS", "ALIGN", "TARGETS",
           "MIN_TEST_WORDS"]


# this package's evaluations, as xling.registry lists them
EVALUATIONS = (eval_align,)
