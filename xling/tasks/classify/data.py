"""Labelled texts per language and split: the Bible genre task from a run's corpus, or the user's TSV files.

    data = bible_genre_task(corpus)                  # TaskData: {(split, lang): Examples}, six genre labels
    data = read_labelled(["train.tsv", "valid.tsv", "test.tsv"])
    train = training_sets(data, "zero-shot", "en", max_train=2000)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xling.corpus import SPLITS
from xling.errors import XlingError
from xling.files import read_lines

GENRES = ["Law", "History", "Wisdom", "Prophets", "Gospels+Acts", "Letters"]
# book number -> genre index: Genesis-Deuteronomy, Joshua-Esther, Job-Song of Solomon, Isaiah-Malachi,
# Matthew-Acts, Romans-Jude; Revelation (66) joins the Prophets
GENRE_OF = {b: g for g, (lo, hi) in enumerate([(1, 5), (6, 17), (18, 22), (23, 39), (40, 44), (45, 65)])
            for b in range(lo, hi + 1)} | {66: 3}

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
