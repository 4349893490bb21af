"""Zero-shot cross-lingual classification: fine-tune on source-language labels, test on every language.

    xling classify --run runs/demo                          # Bible genre task, zero-shot from English
    xling classify --run runs/demo --mode translate-train   # + the human translations of the training verses
    xling classify --run runs/demo --data train.tsv valid.tsv test.tsv --source en
    res = run_transfer(XlingEncoder(model, tok, langs), bible_genre_task(corpus), ClassifyConfig())

Any encoder works (`XlingEncoder` here, `xling.hf.HFEncoder` for local mBERT/XLM-R folders): an
`nn.Module` with `d_model`, `encode_texts(texts, lang) -> token ids with its specials` and
`forward(idx (B,T), pad_mask (B,T), lang) -> (B,T,D)`. The classifier pools the hidden states (mean over
real tokens by default, or the first token), applies dropout and a linear head. `finetune = "head"` trains
the head on frozen pooled features (computed once, so 3 seeds cost little); `"full"` trains the encoder too.

Modes (rows of the transfer matrix; columns are the test languages, cells accuracy and macro-F1):
- zero-shot: train on each source language alone;
- translate-train: the source's training rows plus their translations (rows of other languages with the
  same key; the Bible gives human translations);
- multilingual: every language's own training rows.
Early stopping watches the SOURCE language's valid split only: choosing on a target language would use
target labels, and the result would no longer be zero-shot. Every number is a mean over `seeds` (spread =
standard deviation, ddof=1); a run that predicts one class for a whole test set is reported with a warning.

Built-in task, `bible_genre_task`: each verse of a Bible corpus (keys "book.chapter.verse", books 1-66 in
the Protestant order Genesis..Revelation of `xling.sources.bible`) labelled with its book's genre, GENRE_OF
below. Revelation (the only apocalypse, 404 verses) is merged into Prophets so no class is tiny; the smallest
class left is Letters (~2,770 verses, 9%). Splits are the corpus's own, which hold whole chapters, so no test
verse has a translation in training. Valid and test are capped by a key hash shared by all languages (every
language tests on the same verses); training rows by a hash salted with the language.

Baselines: the majority class, and names-only: multinomial naive Bayes over capitalised words that do not
open a sentence (proper names), trained on the source language. Names carry across Latin-script languages
without any understanding and fail across scripts: a model should beat it everywhere.

User files: TSV `text<TAB>label<TAB>lang[<TAB>split]` or JSONL objects with text, label, lang (and optional
split, key or id: equal keys mark translations). Without a split field the file name says it
(train*/valid*/dev*/test*).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import regex
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xling.batches import pad_right
from xling.corpus import SPLITS, WORD
from xling.encode import mean_pool
from xling.errors import XlingError
from xling.evaluate import EvalContext, evaluation, skipped
from xling.files import atomic_dir, atomic_write_json, atomic_write_text, check_writable, read_lines
from xling.metrics import accuracy, macro_f1
from xling.progress import format_table, progress
from xling.tokenizer import lang_index

MODES = ("zero-shot", "translate-train", "multilingual")
GENRES = ["Law", "History", "Wisdom", "Prophets", "Gospels+Acts", "Letters"]
# book number -> genre index: Genesis-Deuteronomy, Joshua-Esther, Job-Song of Solomon, Isaiah-Malachi,
# Matthew-Acts, Romans-Jude; Revelation (66) joins the Prophets
GENRE_OF = {b: g for g, (lo, hi) in enumerate([(1, 5), (6, 17), (18, 22), (23, 39), (40, 44), (45, 65)])
            for b in range(lo, hi + 1)} | {66: 3}


@dataclass
class ClassifyConfig:
    mode: str = "zero-shot"  # zero-shot | translate-train | multilingual
    source: str = "en"  # source language(s), comma-separated: one zero-shot row each
    finetune: str = "head"  # head (frozen encoder, features computed once) | full (the encoder trains too)
    # mean over real tokens | first token. On a 79-step demo checkpoint the two were within seed noise (en test
    # 0.207 vs 0.194, 3 seeds); mean is kept because the contrastive objective trains mean-pooled vectors
    pooling: str = "mean"
    lr: float = 3e-3  # AdamW learning rate of the head
    encoder_lr: float = 5e-5  # AdamW learning rate of the encoder when finetune = "full"
    weight_decay: float = 0.01
    dropout: float = 0.1  # on the pooled vector, before the head
    epochs: int = 30  # at most; the best epoch on the source valid split is kept
    patience: int = 5  # stop after this many epochs without a better source valid accuracy (0 = never)
    batch_size: int = 32
    max_len: int = 128  # tokens per text, specials included (the encoder's own limit applies too)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # mean and spread over these
    max_train: int = 2000  # training rows per language (0 = all)
    max_valid: int = 300  # source valid rows used for early stopping (0 = all)
    max_test: int = 500  # test rows per language (0 = all)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.finetune not in ("head", "full"):
            raise ValueError(f"finetune must be head or full, not {self.finetune!r}")
        if self.pooling not in ("mean", "first"):
            raise ValueError(f"pooling must be mean or first, not {self.pooling!r}")
        if self.lr <= 0 or self.encoder_lr <= 0 or not 0 <= self.dropout < 1:
            raise ValueError("lr and encoder_lr must be > 0 and dropout in [0, 1)")
        if self.epochs < 1 or self.batch_size < 1 or self.max_len < 3 or not self.seeds:
            raise ValueError("epochs and batch_size must be >= 1, max_len >= 3, seeds non-empty")
        if min(self.patience, self.max_train, self.max_valid, self.max_test) < 0:
            raise ValueError("patience and the max_* caps must be >= 0")

    @property
    def sources(self) -> list[str]:
        return [s.strip() for s in self.source.split(",") if s.strip()]


# ---------------------------------------------------------------------------- data

@dataclass
class Examples:
    """Labelled texts of one language and split."""

    lang: str
    texts: list[str]
    labels: np.ndarray  # (N,) int64 class ids
    keys: list[str]  # equal keys across languages = translations

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, rows) -> Examples:
        return Examples(self.lang, [self.texts[i] for i in rows], self.labels[np.asarray(rows, np.int64)],
                        [self.keys[i] for i in rows])


@dataclass
class TaskData:
    name: str
    classes: list[str]  # class id -> name
    sets: dict[str, dict[str, Examples]]  # split -> lang -> examples

    @property
    def langs(self) -> list[str]:
        return list(dict.fromkeys(lg for s in SPLITS for lg in self.sets.get(s, {})))


def _hash_order(keys: list[str], salt: str = "") -> np.ndarray:
    """A stable pseudo-random order of rows: by sha256 of salt + key (the same on every machine)."""
    h = [hashlib.sha256(f"{salt}{k}".encode()).digest()[:8] for k in keys]
    return np.array(sorted(range(len(keys)), key=h.__getitem__), dtype=np.int64)


def cap(ex: Examples, n: int, salt: str = "") -> Examples:
    """At most n rows, chosen by key hash (n = 0: all), kept in their original order."""
    if not n or len(ex) <= n:
        return ex
    return ex.subset(np.sort(_hash_order(ex.keys, salt)[:n]))


def book_genre(book: int) -> str:
    if book not in GENRE_OF:
        raise XlingError(f"Bible book number {book} is outside 1-66 (Genesis..Revelation)")
    return GENRES[GENRE_OF[book]]


def bible_genre_task(corpus, langs: list[str] | None = None, max_valid: int = 300,
                     max_test: int = 500) -> TaskData:
    """Every verse of a Bible corpus labelled with its book's genre; the corpus's chapter-disjoint splits."""
    sets: dict[str, dict[str, Examples]] = {s: {} for s in SPLITS}
    for split in SPLITS:
        for lang in langs or corpus.langs:
            keys = corpus.keys(split, lang)
            try:
                books = [int(k.split(".")[0]) for k in keys]
            except ValueError:
                raise XlingError(f"corpus {corpus.path} has keys like {keys[0]!r}, not Bible book.chapter.verse; "
                                 f"the genre task needs a bible corpus, or pass labelled --data files") from None
            ex = Examples(lang, corpus.texts(split, lang), np.array([GENRE_OF.get(b, -1) for b in books]), keys)
            if (ex.labels < 0).any():
                book_genre(books[int(np.argmin(ex.labels))])  # raises, naming the book
            sets[split][lang] = cap(ex, {"valid": max_valid, "test": max_test}.get(split, 0))
    return TaskData("bible-genre", list(GENRES), sets)


def _split_from_name(path: Path) -> str | None:
    stem = path.name.lower()
    for split, names in (("train", ("train",)), ("valid", ("valid", "dev")), ("test", ("test",))):
        if any(stem.startswith(n) or f"_{n}" in stem or f".{n}" in stem or f"-{n}" in stem for n in names):
            return split
    return None


def _parse_row(path: Path, n: int, line: str) -> tuple[str, str, str, str | None, str | None]:
    """(text, label, lang, split, key) of one line of a TSV or JSONL file."""
    where = f"{path} line {n}"
    if path.suffix.lower() in (".jsonl", ".json"):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise XlingError(f"{where}: not valid JSON ({e.msg}); write one object per line") from None
        if not isinstance(obj, dict):
            raise XlingError(f"{where}: expected an object with text, label, lang")
        missing = [k for k in ("text", "label", "lang") if obj.get(k) in (None, "")]
        if missing:
            raise XlingError(f"{where}: missing {', '.join(missing)}; every row needs text, label and lang")
        if not isinstance(obj["text"], str) or not isinstance(obj["lang"], str) or \
                not isinstance(obj["label"], str | int) or not isinstance(obj.get("split", ""), str):
            raise XlingError(f"{where}: text, lang and split must be strings, label a string or integer")
        key = obj.get("key", obj.get("id"))
        return obj["text"], str(obj["label"]), obj["lang"], obj.get("split"), None if key is None else str(key)
    cols = line.split("\t")
    if len(cols) not in (3, 4) or not all(c.strip() for c in cols[:3]):
        raise XlingError(f"{where}: expected text<TAB>label<TAB>lang[<TAB>split], got {len(cols)} column(s)"
                         f"{' with an empty one' if len(cols) in (3, 4) else ''}")
    return cols[0].strip(), cols[1].strip(), cols[2].strip(), cols[3].strip() if len(cols) == 4 else None, None


def read_labelled(paths: list[str | Path]) -> TaskData:
    """Labelled rows from TSV/JSONL files; every bad line is one XlingError naming the file and line."""
    from xling.langs import check_lang

    rows: dict[str, dict[str, list]] = {s: {} for s in SPLITS}
    first_seen: dict[tuple[str, str], str] = {}  # (split, label) -> "file line n"
    for p in map(Path, paths):
        if p.suffix.lower() not in (".tsv", ".txt", ".jsonl", ".json"):
            raise XlingError(f"{p}: unknown format; use .tsv (text<TAB>label<TAB>lang) or .jsonl")
        default_split = _split_from_name(p)
        for n, line in enumerate(read_lines(p, "labelled data file"), 1):
            if not line.strip():
                continue
            text, label, lang, split, key = _parse_row(p, n, line)
            split = {"dev": "valid"}.get(split or default_split, split or default_split)
            if split not in SPLITS:
                raise XlingError(f"{p} line {n}: cannot tell the split ({split!r}); name the file train.tsv / "
                                 f"valid.tsv / test.tsv or give a split column (train, valid or test)")
            check_lang(lang, f"{p} line {n}")
            first_seen.setdefault((split, label), f"{p} line {n}")
            rows[split].setdefault(lang, []).append((text, label, key or f"{p.name}:{n}"))
    train_labels = sorted({lab for (s, lab) in first_seen if s == "train"})
    if len(train_labels) < 2:
        raise XlingError(f"the training rows have {len(train_labels)} class(es) "
                         f"({', '.join(train_labels) or 'no train rows'}); a classifier needs at least two")
    for (_, label), where in first_seen.items():
        if label not in train_labels:
            raise XlingError(f"{where}: label {label!r} never occurs in the training rows "
                             f"(classes: {', '.join(train_labels)}); fix the label or add training examples")
    index = {lab: i for i, lab in enumerate(train_labels)}
    sets = {s: {lg: Examples(lg, [r[0] for r in rs], np.array([index[r[1]] for r in rs]), [r[2] for r in rs])
                for lg, rs in by_lang.items()} for s, by_lang in rows.items()}
    return TaskData("user", train_labels, sets)


def training_sets(data: TaskData, mode: str, source: str, max_train: int) -> list[Examples]:
    """The training rows of one transfer-matrix row, one Examples per language."""
    train = data.sets["train"]
    if source not in train:
        raise XlingError(f"no training rows in the source language {source!r} (have: {', '.join(train) or '-'})")
    src = cap(train[source], max_train, f"{source}:")
    if mode == "zero-shot":
        return [src]
    if mode == "multilingual":
        return [cap(ex, max_train, f"{lg}:") for lg, ex in train.items()]
    keys = set(src.keys)
    out = [src] + [ex.subset([i for i, k in enumerate(ex.keys) if k in keys]) for lg, ex in train.items()
                   if lg != source]
    out = [ex for ex in out if len(ex)]
    if len(out) == 1:
        raise XlingError(f"translate-train found no translations of the {source} training rows (rows pair "
                         f"by their key/id); give keys, or use --mode multilingual")
    return out


# ---------------------------------------------------------------------------- encoders and the classifier

class XlingEncoder(nn.Module):
    """A run's Transformer as a bidirectional text encoder: `<lang> text </s>`, language ids if it has them."""

    def __init__(self, model: nn.Module, tokenizer, langs: list[str]):
        super().__init__()
        from xling.tokenizer import EOS_ID, lang_ids

        self.model, self.tokenizer = model, tokenizer
        self.tags = lang_ids(tokenizer, list(langs))  # lang -> tag id (tokenizer.lang_index: its language index)
        self.eos = EOS_ID
        self.d_model: int = model.cfg.d_model
        self.pad_id = 0
        self.train(model.training)  # the wrapper starts in the model's mode (a new Module says training)

    def _tag(self, lang: str) -> int:
        if lang not in self.tags:
            raise XlingError(f"language {lang!r} is not one this model knows ({', '.join(self.tags)})")
        return self.tags[lang]

    def encode_texts(self, texts: list[str], lang: str) -> list[list[int]]:
        tag, room = self._tag(lang), self.model.cfg.block_size - 2
        return [[tag, *e.ids[:room], self.eos] for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def forward(self, idx: Tensor, pad_mask: Tensor, lang: str) -> Tensor:
        lang_ids = None
        if self.model.cfg.n_langs > 0:
            lang_ids = torch.full_like(idx, lang_index(self._tag(lang)))
        return self.model(idx, causal=False, pad_mask=pad_mask, lang_ids=lang_ids)  # (B, T, D)


def pool(hidden: Tensor, pad_mask: Tensor, how: str) -> Tensor:
    """(B, T, D) -> (B, D): mean over real tokens, or the first token."""
    if how == "first":
        return hidden[:, 0]
    return mean_pool(hidden, pad_mask)


class Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, n_classes: int, pooling: str = "mean", dropout: float = 0.1):
        super().__init__()
        self.encoder, self.pooling = encoder, pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.d_model, n_classes)
        # head-only: pooled features are standardised with the training rows' mean/std (set by `fit`); the
        # demo model's vectors share one large mean with tiny per-dimension spread, which a raw head barely fits
        self.register_buffer("shift", torch.zeros(encoder.d_model))
        self.register_buffer("scale", torch.ones(encoder.d_model))

    def features(self, idx: Tensor, pad_mask: Tensor, lang: str) -> Tensor:
        return pool(self.encoder(idx, pad_mask, lang).float(), pad_mask, self.pooling)  # (B, D)

    def classify(self, feats: Tensor) -> Tensor:
        return self.head(self.dropout((feats - self.shift) / self.scale))  # (B, C)

    def forward(self, idx: Tensor, pad_mask: Tensor, lang: str) -> Tensor:
        return self.classify(self.features(idx, pad_mask, lang))


@dataclass
class _Inputs:
    """One language's examples as token ids, with frozen pooled features (N, D) when only the head trains."""

    lang: str
    ids: list[list[int]]
    labels: Tensor
    feats: Tensor | None = None


def prepare(encoder: nn.Module, ex: Examples, cfg: ClassifyConfig, frozen: Classifier | None = None) -> _Inputs:
    """Tokenize (cut to max_len, keeping the encoder's final special); pool features if `frozen` is given."""
    ids = [s if len(s) <= cfg.max_len else s[: cfg.max_len - 1] + s[-1:]
           for s in encoder.encode_texts(ex.texts, ex.lang)]
    inp = _Inputs(ex.lang, ids, torch.as_tensor(ex.labels, dtype=torch.long))
    if frozen is not None:
        pad_id, out = getattr(encoder, "pad_id", 0), torch.zeros(len(ids), encoder.d_model)
        order = np.argsort([len(s) for s in ids], kind="stable")  # similar lengths per batch: little padding
        was = encoder.training
        encoder.eval()
        with torch.no_grad():
            for k in range(0, len(order), 64):
                rows = order[k:k + 64]
                idx, mask = pad_right([ids[i] for i in rows], pad_id)
                out[torch.as_tensor(rows)] = frozen.features(idx, mask, ex.lang).float()
        encoder.train(was)
        inp.feats = out
    return inp


def _logits(clf: Classifier, inp: _Inputs, rows: np.ndarray) -> Tensor:
    if inp.feats is not None:
        return clf.classify(inp.feats[torch.as_tensor(rows)])
    idx, mask = pad_right([inp.ids[i] for i in rows], getattr(clf.encoder, "pad_id", 0))
    return clf(idx, mask, inp.lang).float()


@torch.no_grad()
def predict_logits(clf: Classifier, inp: _Inputs, batch_size: int = 64) -> Tensor:
    was = clf.training
    clf.eval()
    order = np.argsort([len(s) for s in inp.ids], kind="stable")
    out = torch.zeros(len(inp.ids), clf.head.out_features)
    for k in range(0, len(order), batch_size):
        out[torch.as_tensor(order[k:k + batch_size])] = _logits(clf, inp, order[k:k + batch_size]).float()
    clf.train(was)
    return out  # (N, C)


def predict(clf: Classifier, inp: _Inputs) -> np.ndarray:
    return predict_logits(clf, inp).argmax(-1).numpy()


def fit(clf: Classifier, train: list[_Inputs], valid: _Inputs, cfg: ClassifyConfig, seed: int,
        bar=None) -> dict:
    """AdamW on cross-entropy; keeps the epoch with the best accuracy (then loss) on `valid`: the source's."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    full = train[0].feats is None
    groups = [{"params": list(clf.head.parameters()), "lr": cfg.lr}]
    if full:
        groups.append({"params": list(clf.encoder.parameters()), "lr": cfg.encoder_lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    if not full:
        feats = torch.cat([inp.feats for inp in train])  # (N, D), training rows only
        clf.shift.copy_(feats.mean(0))
        clf.scale.copy_(feats.std(0).clamp_min(1e-6))
    keep = clf if full else clf.head  # what changes, so what the best epoch must restore
    best, best_epoch, state, history = (-1.0, 0.0), 0, None, []
    for epoch in range(1, cfg.epochs + 1):
        clf.train()
        batches = [(k, r) for k, inp in enumerate(train)  # one language per batch: the encoder takes one lang
                   for r in np.array_split(rng.permutation(len(inp.ids)), math.ceil(len(inp.ids) / cfg.batch_size))]
        for b in rng.permutation(len(batches)):
            k, rows = batches[b]
            loss = F.cross_entropy(_logits(clf, train[k], rows), train[k].labels[torch.as_tensor(rows)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        logits = predict_logits(clf, valid)
        acc, loss = accuracy(logits.argmax(-1).numpy(), valid.labels.numpy()), F.cross_entropy(logits, valid.labels)
        history.append(acc)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(seed=seed, valid=f"{acc:.3f}")
        if (acc, -loss.item()) > best:  # better accuracy; on a tie, lower valid loss
            best, best_epoch = (acc, -loss.item()), epoch
            state = {k: v.detach().clone() for k, v in keep.state_dict().items()}
        elif cfg.patience and epoch - best_epoch >= cfg.patience:
            break
    if bar is not None:
        bar.update(cfg.epochs - len(history))
    keep.load_state_dict(state)
    return {"best_epoch": best_epoch, "valid_accuracy": best[0], "history": history}


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
    cache: dict[int, tuple[Examples, _Inputs]] = {}  # holding ex keeps its id from being reused

    def inputs(ex: Examples) -> _Inputs:
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
        from xling.checkpoint import load_run as load_for_generation

        model, tok = load_for_generation(run_dir)
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


def _run_cfg(run_dir: Path) -> ClassifyConfig:
    """The run's [classify] section (config.toml), else the defaults."""
    from xling.config import load_config, read_toml

    path = run_dir / "config.toml"
    table = read_toml(path, "the run's config").get("classify", {}) if path.is_file() else {}
    return load_config(None, base={"classify": table}).classify if table else ClassifyConfig()


@evaluation("transfer", order=80)
def eval_transfer(ctx: EvalContext) -> dict:
    cfg = _run_cfg(ctx.run_dir)
    source = cfg.sources[0] if cfg.sources[0] in ctx.langs else ctx.langs[0]
    try:
        data = bible_genre_task(ctx.corpus, ctx.langs, cfg.max_valid, cfg.max_test)
    except XlingError as e:  # not a Bible corpus: no built-in labels
        return skipped(str(e).rstrip("."), "Zero-shot classification (transfer)")
    res = run_transfer(XlingEncoder(ctx.model, ctx.tokenizer, ctx.langs), data, cfg, mode="zero-shot",
                       sources=[source])
    row, b = res["rows"][0], res["baselines"]
    metrics: dict = {"transfer.gap_mean": row["gap_mean"],
                     "transfer.baseline.majority": b["majority"]["accuracy"][source]}
    for lg in res["test_rows"]:
        metrics[f"transfer.accuracy.{lg}"] = row["accuracy"][lg]["mean"]
        metrics[f"transfer.f1.{lg}"] = row["f1"][lg]["mean"]
        metrics[f"transfer.baseline.names.{lg}"] = b["names"]["accuracy"][lg]
    targets = [row["accuracy"][lg]["mean"] for lg in res["test_rows"] if lg != source]
    others = [lg for lg in res["test_rows"] if lg != source]
    if others:  # the headline's pair: zero-shot accuracy where no label was seen, beside names-only's there
        names = b["names"]["accuracy"]
        metrics["transfer.target_accuracy_mean"] = float(np.mean(targets))
        metrics["transfer.baseline.names_target_mean"] = float(np.mean([names[lg] for lg in others]))
        metrics["transfer.baseline.names_gap_mean"] = float(np.mean([names[source] - names[lg] for lg in others]))
        metrics["transfer.items"] = int(sum(res["test_rows"][lg] for lg in others))
    header, rows = matrix_table(res)
    warn = f" Warning: collapsed to one class: {'; '.join(row['collapsed'])}." if row["collapsed"] else ""
    text = (f"Bible genre classification ({len(GENRES)} classes: {', '.join(GENRES)}; Revelation counted with the "
            f"Prophets), trained on {row['train_rows']:,} {source} verses only and tested on the same "
            f"{max(res['test_rows'].values()):,} held-out test-chapter verses in every language. Classifier: "
            f"{cfg.pooling}-pooled final hidden states -> dropout -> linear head, finetune={cfg.finetune}, AdamW "
            f"lr {cfg.lr}, best of up to {cfg.epochs} epochs chosen on {row['valid_rows']} {source} valid verses "
            f"only; mean over seeds {cfg.seeds} (best epochs {row['best_epochs']}). Mean target accuracy "
            f"{np.mean(targets) if targets else float('nan'):.3f} vs {row['accuracy'][source]['mean']:.3f} in "
            f"{source} (mean gap {row['gap_mean']:.3f}). Names-only = naive Bayes over capitalised non-initial "
            f"words, trained on {source}.{warn} {res['seconds']:.0f} s. {ctx.provenance('test')}.")
    return {"metrics": metrics, "sections": [{"title": "Zero-shot classification (transfer)", "blocks": [
        {"kind": "text", "text": text}, {"kind": "table", "header": header, "rows": rows}, heatmap(res)]}]}
