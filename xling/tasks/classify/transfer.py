"""The transfer matrix: train on the source language(s), test on every language, several seeds; beside the
majority-class and names-only baselines; `xling classify` writes it as a table and a heatmap.

    res = run_transfer(XlingEncoder(model, tok, langs), bible_genre_task(corpus), ClassifyConfig())
    xling classify --run runs/demo
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import regex
import torch
from torch import nn

from xling.corpus import WORD
from xling.errors import XlingError
from xling.files import atomic_dir, atomic_write_json, atomic_write_text, check_writable
from xling.metrics import accuracy, macro_f1
from xling.progress import format_table, progress
from xling.tasks.classify.config import MODES, ClassifyConfig
from xling.tasks.classify.data import Examples, TaskData, bible_genre_task, cap, read_labelled, training_sets
from xling.tasks.classify.model import Classifier, Inputs, XlingEncoder, fit, predict, prepare

# ---------------------------------------------------------------------------- metrics and baselines

def proper_names(text: str) -> list[str]:
    """Capitalised words (2+ letters) that do not open a sentence: mostly names in cased scripts."""
    out = []
    for m in WORD.finditer(text):
        before = regex.sub(r"[\s\"'“”‘’«»„()\[\]¿¡—-]+", "", text[: m.start()])
        if len(m.group()) > 1 and m.group()[0].isupper() and before and before[-1] not in ".!?:;":
            out.append(m.group())
    return out


class NamesOnly:
    """Multinomial naive Bayes over proper names (add-one smoothing); a text without known names gets the prior."""

    def __init__(self, texts: list[str], labels: np.ndarray, n_classes: int, alpha: float = 1.0):
        docs = [proper_names(t) for t in texts]
        self.vocab = {w: i for i, w in enumerate(sorted({w for d in docs for w in d}))}
        counts = np.zeros((n_classes, len(self.vocab) + 1))
        for d, y in zip(docs, labels, strict=True):
            for w in d:
                counts[y, self.vocab[w]] += 1
        counts[:, -1] = 0  # unknown names carry no evidence
        self.log_prior = np.log(np.bincount(labels, minlength=n_classes) + 1e-9) - np.log(len(labels))
        self.log_p = np.log(counts + alpha) - np.log((counts + alpha).sum(1, keepdims=True))
        self.log_p[:, -1] = 0.0

    def predict(self, texts: list[str]) -> np.ndarray:
        unk = len(self.vocab)
        return np.array([int(np.argmax(self.log_prior + self.log_p[:, [self.vocab.get(w, unk) for w in
                                                                       proper_names(t)]].sum(1)))
                         for t in texts], dtype=np.int64)


def baselines(data: TaskData, source: str, train: Examples) -> dict:
    """Majority class and names-only accuracy/macro-F1 on every test language (trained on `train`)."""
    n = len(data.classes)
    major = int(np.bincount(train.labels, minlength=n).argmax())
    names = NamesOnly(train.texts, train.labels, n)
    out = {"majority": {"class": data.classes[major], "accuracy": {}, "f1": {}},
           "names": {"train": source, "accuracy": {}, "f1": {}}}
    for lg, ex in data.sets["test"].items():
        for kind, pred in (("majority", np.full(len(ex), major)), ("names", names.predict(ex.texts))):
            out[kind]["accuracy"][lg] = accuracy(pred, ex.labels)
            out[kind]["f1"][lg] = macro_f1(pred, ex.labels)
    return out


# ---------------------------------------------------------------------------- the transfer matrix

def _mean_std(xs: list[float]) -> dict:
    return {"mean": float(np.mean(xs)), "std": float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0,
            "seeds": [float(x) for x in xs]}


def run_transfer(encoder: nn.Module, data: TaskData, cfg: ClassifyConfig, *, mode: str | None = None,
                 sources: list[str] | None = None) -> dict:
    """Train per row (zero-shot: per source; translate-train; multilingual) and seed; test on every language."""
    from xling.precision import training_autocast

    mode, sources = mode or cfg.mode, sources or cfg.sources
    if mode not in MODES:
        raise XlingError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    t0, n_classes = time.perf_counter(), len(data.classes)
    tests = {lg: ex for lg, ex in data.sets["test"].items() if len(ex)}
    if not tests:
        raise XlingError("no test rows in any language; give a test split")
    plan = []  # (row name, source, training sets)
    for src in sources if mode == "zero-shot" else sources[:1]:
        valid = data.sets["valid"].get(src)
        if valid is None or not len(valid):
            raise XlingError(f"no valid rows in the source language {src!r}: early stopping needs them "
                             f"(only the source's valid split is ever used for choices)")
        name = {"zero-shot": src, "translate-train": f"{src}+translations", "multilingual": "all"}[mode]
        plan.append((name, src, training_sets(data, mode, src, cfg.max_train)))
    full, was_training = cfg.finetune == "full", encoder.training
    frozen = None if full else Classifier(encoder, n_classes, cfg.pooling)
    cache: dict[int, tuple[Examples, Inputs]] = {}  # holding ex keeps its id from being reused

    def inputs(ex: Examples) -> Inputs:
        if id(ex) not in cache:
            cache[id(ex)] = (ex, prepare(encoder, ex, cfg, frozen))
        return cache[id(ex)][1]

    for ex in progress(list(tests.values()), desc="classify: encode test", unit="lang", leave=False):
        inputs(ex)  # under the caller's autocast (bf16 in `xling evaluate`): encoding is most of the time
    prepared = [(name, src, [inputs(ex) for ex in sets], inputs(cap(data.sets["valid"][src], cfg.max_valid)),
                 [ex.lang for ex in sets]) for name, src, sets in plan]
    initial = {k: v.detach().clone() for k, v in encoder.state_dict().items()} if full else None
    bar = progress(total=len(plan) * len(cfg.seeds) * cfg.epochs, desc="classify: fine-tune", unit="epoch")
    rows = []
    for name, src, train_in, valid_in, train_langs in prepared:
        acc: dict[str, list] = {lg: [] for lg in tests}
        f1: dict[str, list] = {lg: [] for lg in tests}
        fits, collapsed = [], []
        for seed in cfg.seeds:
            torch.manual_seed(seed)
            clf = Classifier(encoder, n_classes, cfg.pooling, cfg.dropout)
            # a head on frozen features trains in fp32; a full fine-tune keeps the caller's autocast dtype, with
            # fresh weight casts every step (precision.training_autocast says why)
            with training_autocast("cpu", torch.get_autocast_dtype("cpu") if full and
                                   torch.is_autocast_enabled("cpu") else None):
                try:
                    fits.append(fit(clf, train_in, valid_in, cfg, seed, bar))
                    for lg, ex in tests.items():
                        pred = predict(clf, inputs(ex))
                        acc[lg].append(accuracy(pred, ex.labels))
                        f1[lg].append(macro_f1(pred, ex.labels))
                        if len(set(pred.tolist())) == 1 and len(set(ex.labels.tolist())) > 1:
                            collapsed.append(f"seed {seed} {lg}: {data.classes[int(pred[0])]}")
                finally:
                    if initial is not None:
                        encoder.load_state_dict(initial)
                    encoder.train(was_training)  # the caller's model leaves as it came
        if collapsed:
            print(f"classify: warning: row {name} predicts a single class for a whole test set "
                  f"({'; '.join(collapsed)}): the run collapsed; try another lr or more epochs", file=sys.stderr)
        row = {"name": name, "mode": mode, "source": src, "train_langs": train_langs,
               "train_rows": sum(len(i.ids) for i in train_in), "valid_rows": len(valid_in.ids),
               "accuracy": {lg: _mean_std(v) for lg, v in acc.items()},
               "f1": {lg: _mean_std(v) for lg, v in f1.items()},
               "best_epochs": [f["best_epoch"] for f in fits],
               "valid_accuracy": [f["valid_accuracy"] for f in fits], "collapsed": collapsed}
        if src in tests:
            row["gap"] = {lg: row["accuracy"][src]["mean"] - row["accuracy"][lg]["mean"]
                          for lg in tests if lg != src}
            row["gap_mean"] = float(np.mean(list(row["gap"].values()))) if row["gap"] else 0.0
        rows.append(row)
    bar.close()
    src0 = plan[0][1]
    return {"task": data.name, "classes": data.classes, "mode": mode, "sources": sources, "config": asdict(cfg),
            "test_rows": {lg: len(ex) for lg, ex in tests.items()}, "rows": rows,
            "baselines": baselines(data, src0, cap(data.sets["train"][src0], cfg.max_train, f"{src0}:")),
            "seconds": time.perf_counter() - t0}


def matrix_table(res: dict) -> tuple[list[str], list[list]]:
    """Header and rows: one line per training row and test language, with baselines beside."""
    b = res["baselines"]
    header = ["train", "test", "accuracy", "± std", "macro-F1", "gap", "names-only", "majority"]
    out = []
    for row in res["rows"]:
        for lg, a in row["accuracy"].items():
            gap = row.get("gap", {}).get(lg, 0.0 if lg == row["source"] else "-")
            out.append([row["name"], lg, a["mean"], a["std"], row["f1"][lg]["mean"], gap,
                        b["names"]["accuracy"][lg], b["majority"]["accuracy"][lg]])
    return header, out


def heatmap(res: dict, name: str = "transfer") -> dict:
    langs = list(res["test_rows"])
    rows = [[r["accuracy"][lg]["mean"] for lg in langs] for r in res["rows"]]
    labels = [f"{r['name']} ({r['mode']})" for r in res["rows"]]
    rows += [[res["baselines"][k]["accuracy"][lg] for lg in langs] for k in ("names", "majority")]
    return {"kind": "heatmap", "name": name, "rows": labels + ["names-only", "majority"], "cols": langs,
            "values": rows, "xlabel": "test language", "ylabel": "training", "title": "Accuracy: transfer matrix"}


# ---------------------------------------------------------------------------- command and demo evaluation

def classify_run(run_dir: str | Path, cfg: ClassifyConfig, data_files: list[str] | None = None,
                 hf: str | None = None, out: str | Path | None = None) -> dict:
    """`xling classify`: fine-tune the run's model (or a local HF encoder), write results.json, a table, a heatmap."""
    from xling.corpus import Corpus
    from xling.report import plot

    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "classify"
    if hf:  # before any data is read: a folder without safetensors weights is refused, never torch.load-ed
        from xling.hf import check_encoder_folder

        check_encoder_folder(hf)
    check_writable(out, "--out", directory=True)
    if data_files:
        data = read_labelled(data_files)  # bad input fails before the model loads
    else:
        data = bible_genre_task(Corpus(run_dir / "corpus"), max_valid=cfg.max_valid, max_test=cfg.max_test)
    if hf:
        from xling.hf import HFEncoder

        encoder = HFEncoder(hf, max_length=cfg.max_len)
    else:
        from xling.checkpoint import load_run

        model, tok = load_run(run_dir)
        encoder = XlingEncoder(model, tok, data.langs)
    res = run_transfer(encoder, data, cfg)
    res["encoder"] = str(hf) if hf else str(run_dir)
    header, rows = matrix_table(res)
    table = format_table(header, rows, title=f"{res['task']}: {res['mode']}, finetune={cfg.finetune}, "
                                             f"{len(cfg.seeds)} seeds")
    with atomic_dir(out) as tmp:
        atomic_write_json(tmp / "results.json", res)
        atomic_write_text(tmp / "transfer.md", table + "\n")
        plot(heatmap(res), tmp / "transfer.png")
    print(table)
    for row in res["rows"]:
        if "gap_mean" in row:
            print(f"{row['name']}: mean transfer gap {row['gap_mean']:.3f} (source accuracy minus target)")
    print(f"classify: {res['seconds']:.1f} s; wrote {out}/results.json, transfer.md, transfer.png")
    return res
