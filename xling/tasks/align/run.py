"""One alignment task end to end: learn each configured mapping, score it (P@k by frequency band, beside the
copy-the-word baseline), write the results, the matrices and a plot.

    result = run_align(src_vecs, tgt_vecs, "runs/demo/align/en-fr", src_lang="en", tgt_lang="fr", pairs=...)
    align_metrics(result)   # {"align.p_at_1.en-fr.supervised": ..., ...}
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from xling.errors import XlingError
from xling.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from xling.progress import format_table
from xling.tasks.align.config import SUPERVISED, AlignConfig, rank_bands
from xling.tasks.align.csls import (
    Space,
    evaluate_bli,
    frequency_bands,
)
from xling.tasks.align.dictionaries import (
    coverage_line,
    filter_pairs,
    split_by_rank,
)
from xling.tasks.align.mapping import criterion, learn_mapping, mapped_space, normalize_embeddings
from xling.tasks.align.vectors import Vectors, write_vec

# ---------------------------------------------------------------------------- the whole task

def run_align(src: Vectors, tgt: Vectors, out_dir: str | Path, *, src_lang: str, tgt_lang: str,
              pairs: list[tuple[str, str]] | None = None, cfg: AlignConfig | None = None,
              log: Callable[[str], None] = print) -> dict:
    """Learn every method's mapping src -> tgt, evaluate it, write the outputs into `out_dir`:

    W-<method>.npy (the (d, d) map, applied to normalised source vectors: x -> W x),
    vectors/<src>-<method>.vec and vectors/<tgt>.vec (if cfg.write_vectors), results.json,
    table.md (P@1/5/10, NN and CSLS, per method) and p_at_1_by_band.png.
    Returns results.json's content; `results["metrics"]` holds flat `align.*` numbers.
    """
    cfg = cfg or AlignConfig()
    out_dir = Path(out_dir)
    src, tgt = src.head(cfg.max_vocab), tgt.head(cfg.max_vocab)
    if src.dim != tgt.dim:
        raise XlingError(f"source vectors have dimension {src.dim} but target vectors {tgt.dim}; "
                         f"an orthogonal map needs equal dimensions")
    for vecs, lang in ((src, src_lang), (tgt, tgt_lang)):
        bad = np.flatnonzero(~np.isfinite(vecs.vecs).all(axis=1))
        if len(bad):
            raise XlingError(f"the {lang} vector of {vecs.words[bad[0]][:40]!r} (row {bad[0] + 1}) has inf or "
                             f"nan values ({len(bad)} such rows); fix or drop them before aligning")
    x, y = normalize_embeddings(src.vecs, cfg.normalize), normalize_embeddings(tgt.vecs, cfg.normalize)
    pair = f"{src_lang}-{tgt_lang}"
    train = test = held_out_all = None
    results: dict = {"pair": pair, "src_words": len(src), "tgt_words": len(tgt), "dim": src.dim,
                     "config": asdict(cfg), "methods": {}}
    if pairs:
        idx, stats = filter_pairs(pairs, src.index, tgt.index)
        log(coverage_line(stats, src_lang, tgt_lang))
        if len(idx) == 0:
            raise XlingError(f"no pair of the {src_lang}-{tgt_lang} dictionary ({stats['pairs']:,} pairs) has both "
                             f"words in the vocabularies; check the languages and the word forms (lowercase)")
        train_ranks, test_ranks = rank_bands(cfg, len(src))
        train, test = split_by_rank(idx, train_ranks, test_ranks)
        results["dictionary"] = dict(stats, train_pairs=len(train), test_pairs=len(test),
                                     train_words=len(np.unique(train[:, 0])),
                                     test_words=len(np.unique(test[:, 0])),
                                     train_ranks=list(train_ranks), test_ranks=list(test_ranks),
                                     copy_p_at_1=copy_baseline(test, src.words, tgt.index))
        log(f"train dictionary: {len(train):,} pairs (source ranks {list(train_ranks)}); test: {len(test):,} "
            f"pairs, {results['dictionary']['test_words']:,} source words (ranks {list(test_ranks)}"
            f"{'' if cfg.train_ranks else ', fitted to ' + format(len(src), ',') + ' source words'})")
        held_out_all = idx
    methods = [m for m in cfg.methods if pairs or m not in SUPERVISED]
    if not pairs and len(methods) < len(cfg.methods):
        log("no dictionary: skipping the supervised methods and P@k")
    band_rows = {}
    for method in methods:
        t0 = time.perf_counter()
        try:
            w, info = learn_mapping(method, x, y, src.words, tgt.words, train, cfg, log)
        except XlingError as e:  # e.g. no identical strings across scripts: the other methods still run
            log(f"{method}: skipped: {e}")
            continue
        seconds = time.perf_counter() - t0
        entry = {"seconds": seconds, **{k: v for k, v in info.items() if k != "raw_w"}}
        variants = [(method, w)] + ([(f"{method} (no refinement)", info["raw_w"])] if "raw_w" in info else [])
        for name, wv in variants:
            space = mapped_space(x, y, wv, cfg)
            ev = {"criterion": criterion(x, y, wv, cfg)}
            if test is not None and len(test):
                for how in ("nn", "csls"):
                    p, _, _ = evaluate_bli(space, test, how)
                    ev[how] = {f"p@{k}": v for k, v in p.items()}
            if name == method:
                entry.update(ev)
                atomic_write_bytes(out_dir / f"W-{method}.npy", _npy(wv))
                if pairs:
                    # every dictionary pair whose source word the method did not train on
                    trained = set(train[:, 0].tolist()) if method in SUPERVISED else set()
                    held = held_out_all[~np.isin(held_out_all[:, 0], list(trained))]
                    band_rows[method] = _by_band(space, held, len(src))
                if cfg.write_vectors:
                    write_vec(out_dir / "vectors" / f"{src_lang}-{method}.vec", Vectors(src.words, x @ wv.T))
            else:
                entry["no_refinement"] = ev
        results["methods"][method] = entry
        p1 = f", P@1 NN {entry['nn']['p@1']:.3f} CSLS {entry['csls']['p@1']:.3f}" if "csls" in entry else ""
        log(f"{method}: {seconds:.1f} s, criterion {entry['criterion']:.4f}{p1}")
    if not results["methods"]:
        raise XlingError(f"no alignment method could run for {pair} (see above); give a dictionary with "
                         f"pairs in align.train_ranks or add adversarial to align.methods")
    if cfg.write_vectors:
        write_vec(out_dir / "vectors" / f"{tgt_lang}.vec", Vectors(tgt.words, y))
    results["bands"] = band_rows
    results["selected"] = selected_methods(results)
    for kind, pick in results["selected"].items():  # which start won is reported, never hidden
        crits = ", ".join(f"{m} {results['methods'][m]['criterion']:.4f}" for m in KINDS[kind]
                          if m in results["methods"])
        log(f"{pair} {kind}: the criterion picks {pick} ({crits})")
    results["metrics"] = align_metrics(results)
    table = results_table(results)
    results["table"] = table
    atomic_write_text(out_dir / "table.md", table + "\n")
    atomic_write_json(out_dir / "results.json", _jsonable(results))
    if any(band_rows.values()):
        plot_bands(band_rows, out_dir / "p_at_1_by_band.png", pair)
    log(table)
    return results


def copy_baseline(test: np.ndarray, src_words: list[str], tgt_index: dict[str, int]) -> float:
    """P@1 of the trivial system that translates every word as itself: the share of test source words one of
    whose dictionary translations is the same string (names, numbers, loans). What a map must beat."""
    words = np.unique(test[:, 0])
    if not len(words):
        return 0.0
    gold = set(map(tuple, test.tolist()))
    hits = sum((int(i), tgt_index[src_words[i]]) in gold for i in words if src_words[i] in tgt_index)
    return hits / len(words)


def _by_band(space: Space, pairs: np.ndarray, n_src: int) -> list[dict]:
    rows = []
    for lo, hi in frequency_bands(n_src):
        sel = pairs[(pairs[:, 0] >= lo) & (pairs[:, 0] < hi)]
        if len(sel):
            p, q, _ = evaluate_bli(space, sel, "csls", ks=(1,))
            rows.append({"band": f"{lo}-{hi}", "words": len(q), "p@1": p[1]})
    return rows


KINDS = {"supervised": SUPERVISED, "unsupervised": ("adversarial", "identical")}


def selected_methods(results: dict) -> dict[str, str]:
    """{"supervised": m, "unsupervised": m}: per kind, the learned method with the best unsupervised
    criterion (no dictionary needed), e.g. adversarial vs identical-strings start."""
    methods = results["methods"]
    out = {}
    for kind, names in KINDS.items():
        scored = [m for m in names if m in methods]
        if scored:
            out[kind] = max(scored, key=lambda m: methods[m]["criterion"])
    return out


def align_metrics(results: dict) -> dict[str, float]:
    """Flat metrics: align.p_at_1.<pair>.<method>.<nn|csls>, plus the headline numbers
    align.p_at_1.<pair>.supervised (best supervised method by the criterion, CSLS) and
    align.p_at_1.<pair>.unsupervised (the unsupervised method the criterion picks, CSLS); with a test
    dictionary, align.test_words.<pair> and align.p_at_1.<pair>.copy (`copy_baseline`)."""
    pair, out = results["pair"], {}
    methods = results["methods"]
    for m, e in methods.items():
        for how in ("nn", "csls"):
            if how in e:
                out[f"align.p_at_1.{pair}.{m}.{how}"] = e[how]["p@1"]
    for kind, pick in selected_methods(results).items():
        if "csls" in methods[pick]:
            out[f"align.p_at_1.{pair}.{kind}"] = methods[pick]["csls"]["p@1"]
    d = results.get("dictionary")
    if d and d["test_words"]:  # what the numbers rest on, and the trivial system they must beat
        out[f"align.test_words.{pair}"] = d["test_words"]
        out[f"align.p_at_1.{pair}.copy"] = d["copy_p_at_1"]
    return out


def results_table(results: dict) -> str:
    rows = []
    for m, e in results["methods"].items():
        for name, ev in ((f"{m} (no refinement)", e.get("no_refinement")), (m, e)):
            if ev is None:
                continue
            row = [name, ev["criterion"]]
            for how in ("nn", "csls"):
                row += [ev[how][f"p@{k}"] for k in (1, 5, 10)] if how in ev else ["-"] * 3
            rows.append(row + [e["seconds"] if ev is e else "-"])
    header = ["method", "criterion", "NN P@1", "NN P@5", "NN P@10", "CSLS P@1", "CSLS P@5", "CSLS P@10",
              "seconds"]
    d = results.get("dictionary")
    title = f"Word-embedding alignment {results['pair']}" + (
        f" (test: {d['test_words']:,} source words)" if d else " (no dictionary: no P@k)")
    return format_table(header, rows, title=title)


def plot_bands(band_rows: dict[str, list[dict]], path: str | Path, pair: str) -> None:
    """P@1 (CSLS) against the source word's frequency band, one line per method (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # one shared x axis in frequency order, whatever bands each method has held-out words in
    bands = sorted({r["band"] for rows in band_rows.values() for r in rows},
                   key=lambda b: int(b.split("-")[0]))
    fig, ax = plt.subplots(figsize=(7, 4))
    for method, rows in band_rows.items():
        if rows:
            x = [bands.index(r["band"]) for r in rows]
            ax.plot(x, [r["p@1"] for r in rows], marker="o", label=method)
    ax.set_xticks(range(len(bands)), bands)
    ax.set_xlabel("source word frequency rank")
    ax.set_ylabel("P@1 (CSLS)")
    ax.set_ylim(0, 1)
    ax.set_title(f"{pair}: translation accuracy by word frequency (held-out pairs)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a, dtype=np.float32))
    return buf.getvalue()


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.integer | np.floating):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj
