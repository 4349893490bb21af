"""The alignment entry points of the CLI: two `.vec` files (`xling align`), or a run's corpus (static vectors
trained on it, FreeDict/CLDR dictionaries).

    xling align --src en.vec --tgt fr.vec --dict freedict
    align_from_corpus("runs/demo/corpus", "runs/demo/align", "en", ["fr", "de"])
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from xling.errors import XlingError
from xling.files import atomic_write_json
from xling.langs import check_lang
from xling.tasks.align.config import AlignConfig
from xling.tasks.align.dictionaries import (
    dictionary_pairs,
    filter_pairs,
    load_dictionary,
)
from xling.tasks.align.run import run_align
from xling.tasks.align.vectors import VectorsConfig, corpus_vectors, read_vec

# ---------------------------------------------------------------------------- entry points for the CLI

def align_files(src_vec: str | Path, tgt_vec: str | Path, out_dir: str | Path, *, src_lang: str,
                tgt_lang: str, dictionary: str | None = None, cfg: AlignConfig | None = None,
                log: Callable[[str], None] = print) -> dict:
    """`xling align --src-vec A --tgt-vec B`: align two `.vec` files; `dictionary` = a MUSE file,
    "freedict", "cldr", "freedict+cldr" or None (unsupervised methods only)."""
    check_lang(src_lang, "--src")
    check_lang(tgt_lang, "--tgt")
    cfg = cfg or AlignConfig()
    src = read_vec(src_vec, max_words=cfg.max_vocab)
    tgt = read_vec(tgt_vec, max_words=cfg.max_vocab)
    if src.dim != tgt.dim:  # before a dictionary is loaded (FreeDict en-de takes seconds)
        raise XlingError(f"{src_vec} has {src.dim}-dimensional vectors but {tgt_vec} {tgt.dim}-dimensional; "
                         f"an orthogonal map needs equal dimensions")
    for vecs, path in ((src, src_vec), (tgt, tgt_vec)):
        if len(vecs) < 2:
            raise XlingError(f"{path} holds {len(vecs)} word vector(s); alignment needs a vocabulary")
    pairs = load_dictionary(dictionary, src_lang, tgt_lang) if dictionary else None
    return run_align(src, tgt, out_dir, src_lang=src_lang, tgt_lang=tgt_lang, pairs=pairs, cfg=cfg, log=log)


def align_pairs(corpus_dir: str | Path, out_dir: str | Path, src_lang: str, tgt_langs: list[str], *,
                vectors_cfg: VectorsConfig | None = None, cfg: AlignConfig | None = None,
                dictionary: str = "freedict", vectors_dir: str | Path | None = None,
                log: Callable[[str], None] = print) -> dict[str, dict]:
    """Align `src_lang` to each of `tgt_langs` of a corpus: {pair: run_align's results}.

    Vectors are `<vectors_dir>/<lang>.vec` when given (e.g. from `xling vectors --from-model`), else
    static vectors trained on the corpus's train split, cached in `<out_dir>/vectors/`. Dictionaries
    as `dictionary_pairs` (cached in `<out_dir>/dicts/`); each pair's outputs go to `<out_dir>/<pair>/`.
    """
    from xling.corpus import Corpus

    corpus = Corpus(corpus_dir)
    out_dir = Path(out_dir)
    langs = list(dict.fromkeys([src_lang, *tgt_langs]))
    for lang in langs:  # every language checked before any training starts
        check_lang(lang)
        if lang not in corpus.langs:
            raise XlingError(f"language {lang!r} is not in the corpus {corpus_dir} ({', '.join(corpus.langs)})")
        if lang == src_lang and lang in tgt_langs:
            raise XlingError(f"source and target language are both {lang!r}; align two different languages")
    vecs = {}
    for lang in langs:
        t0 = time.perf_counter()
        if vectors_dir is not None:
            vecs[lang] = read_vec(Path(vectors_dir) / f"{lang}.vec")
            how = f"read from {vectors_dir}"
        else:
            vecs[lang], cached = corpus_vectors(corpus, lang, out_dir / "vectors", vectors_cfg)
            how = "cached" if cached else f"trained in {time.perf_counter() - t0:.1f} s"
        log(f"vectors {lang}: {len(vecs[lang]):,} words x {vecs[lang].dim} ({how})")
    results = {}
    for tgt in tgt_langs:
        pairs = dictionary_pairs(dictionary, src_lang, tgt, out_dir / "dicts", log)
        if pairs and len(filter_pairs(pairs, vecs[src_lang].index, vecs[tgt].index)[0]) == 0:
            log(f"dictionary for {src_lang}-{tgt}: no pair in the vocabularies; unsupervised methods only")
            pairs = None
        results[f"{src_lang}-{tgt}"] = run_align(vecs[src_lang], vecs[tgt], out_dir / f"{src_lang}-{tgt}",
                                                 src_lang=src_lang, tgt_lang=tgt, pairs=pairs, cfg=cfg, log=log)
    return results


def align_from_corpus(corpus_dir: str | Path, out_dir: str | Path, src_lang: str, tgt_langs: list[str], *,
                      vectors_cfg: VectorsConfig | None = None, cfg: AlignConfig | None = None,
                      dictionary: str = "freedict", vectors_dir: str | Path | None = None,
                      log: Callable[[str], None] = print) -> dict[str, float]:
    """`xling align --run RUN`: `align_pairs`, then the merged `align.*` metrics of every pair
    (also written to `<out_dir>/metrics.json`). Where `dictionary` has nothing for a pair, CLDR
    names are tried, then none (unsupervised methods only, no P@k)."""
    results = align_pairs(corpus_dir, out_dir, src_lang, tgt_langs, vectors_cfg=vectors_cfg, cfg=cfg,
                          dictionary=dictionary, vectors_dir=vectors_dir, log=log)
    metrics: dict[str, float] = {}
    for res in results.values():
        metrics.update(res["metrics"])
    atomic_write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics


def align_command(src: str | None, tgt: str | None, *, cfg: AlignConfig, vectors_cfg: VectorsConfig,
                  src_vec: str | None = None, tgt_vec: str | None = None, run: str | None = None,
                  vectors: str | None = None, out: str | None = None, dictionary: str | None = None,
                  default_run: str = "runs/demo") -> Path:
    """`xling align`: two modes, told apart by the options. Files mode (src_vec and tgt_vec) aligns two `.vec`
    files into `out` (default align/SRC-TGT); run mode (run, default `default_run`) aligns a run's languages,
    `tgt` may list several (fr,ru), into `out` (default <run>/align). A mix of the two is one XlingError.
    Returns the output folder."""
    if not src or not tgt:
        raise XlingError("give the languages: --src en --tgt fr (in run mode --tgt may list several: fr,ru)")
    if src_vec or tgt_vec:
        if not (src_vec and tgt_vec):
            raise XlingError("give both --src-vec and --tgt-vec (.vec files), or neither and --run RUN")
        if run or vectors:
            raise XlingError("--src-vec/--tgt-vec align two files; --run/--vectors align a run's languages: "
                             "use one or the other")
        out_dir = Path(out or f"align/{src}-{tgt}")
        align_files(src_vec, tgt_vec, out_dir, src_lang=src, tgt_lang=tgt, dictionary=dictionary, cfg=cfg)
    else:
        run_dir = Path(run or default_run)
        out_dir = Path(out or run_dir / "align")
        tgts = [x.strip() for x in tgt.split(",") if x.strip()]
        align_from_corpus(run_dir / "corpus", out_dir, src, tgts, vectors_cfg=vectors_cfg, cfg=cfg,
                          dictionary=dictionary or "freedict", vectors_dir=vectors)
    return out_dir


def load_mapping(path: str | Path) -> np.ndarray:
    """A W-<method>.npy written by run_align (a (d, d) float array; no pickles)."""
    try:
        w = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise XlingError(f"mapping {path} cannot be read ({e}); give a W-<method>.npy from xling align") \
            from None
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise XlingError(f"mapping {path} has shape {w.shape}; expected a square (d, d) matrix")
    return w

