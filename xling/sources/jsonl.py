"""JSON Lines source: one object per line with a text, a language and an optional id.

    [corpus]
    source = "jsonl"
    paths = ["data/"]          # *.jsonl files, or folders of them
    text_column = "text"       # field names, as in the data
    lang_column = "lang"
    id_column = "id"           # optional per object; equal ids across languages = translations

    {"id": "gen-1-1", "lang": "en", "text": "In the beginning..."}
    {"id": "gen-1-1", "lang": "fr", "text": "Au commencement..."}

An object without the id field gets the key `"<file name>:<line>"`. The id is also
the split group, so translations land in the same split.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

from xling.errors import XlingError
from xling.files import iter_lines, line_spans
from xling.langs import check_lang
from xling.sources import Segment

if TYPE_CHECKING:
    from xling.corpus import CorpusConfig


def list_files(paths: list[str], pattern: str, what: str) -> list[Path]:
    """Files named by corpus.paths: the files themselves, or `pattern` matches under folders (sorted)."""
    if not paths:
        raise XlingError(f"corpus.paths is empty; list the {what} files or folders to read")
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob(pattern) if f.is_file())
            if not found:
                raise XlingError(f"folder {p} has no {pattern} files; check corpus.paths")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise XlingError(f"input path {p} does not exist; check corpus.paths")
    return out


class RecordChecker:
    """Turns (text, lang, id) values of one record into a Segment, with errors that name the option."""

    def __init__(self, cfg: CorpusConfig):
        self.cfg = cfg
        self.wanted = set(cfg.langs)
        self._langs: dict[str, str] = {}

    def segment(self, text, lang, ident, default_key: str, where: str) -> Segment | None:
        if not isinstance(lang, str):
            raise XlingError(f"{where}: the {self.cfg.lang_column!r} field must be a language code string, "
                             f"not {lang!r}; fix the data or corpus.lang_column")
        if self.wanted and lang not in self.wanted:
            return None  # not validated: a language the run does not use may have any label
        if lang not in self._langs:
            self._langs[lang] = check_lang(lang, where)
        if text is None:
            return None
        if not isinstance(text, str):
            raise XlingError(f"{where}: the {self.cfg.text_column!r} field must be a string, not "
                             f"{type(text).__name__}; fix the data or corpus.text_column")
        if ident is None:
            key = default_key
        elif isinstance(ident, str | int) and not isinstance(ident, bool):
            key = str(ident)
        else:
            raise XlingError(f"{where}: the {self.cfg.id_column!r} field must be a string or integer, "
                             f"not {ident!r}; fix the data or corpus.id_column")
        if not text.strip():
            return None
        return Segment(lang=lang, key=key, text=text, group=key)


def missing_column(where: str, column: str, option: str, have) -> XlingError:
    return XlingError(f"{where} has no {column!r} field (it has: {', '.join(map(str, have)) or 'none'}); "
                      f"set corpus.{option} to the name used in the data")


def read(cfg: CorpusConfig) -> Iterator[Segment]:
    check = RecordChecker(cfg)
    return chain.from_iterable(read_unit(cfg, u, check) for u in units(cfg))


def units(cfg: CorpusConfig, size: int | None = None) -> Iterator[tuple[str, tuple | None]]:
    """(file, span) pieces in reading order: whole files, or with `size` stretches of about `size` bytes."""
    for path in list_files(cfg.paths, "*.jsonl", "JSON Lines"):
        yield from ((str(path), span) for span in (line_spans(path, size) if size else [None]))


def read_unit(cfg: CorpusConfig, unit: tuple[str, tuple | None],
              check: RecordChecker | None = None) -> Iterator[Segment]:
    path, span = Path(unit[0]), unit[1]
    check = check or RecordChecker(cfg)
    for n, line in enumerate(iter_lines(path, "JSON Lines file", span), span[2] if span else 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise XlingError(f"{where}: bad JSON ({e.msg} at column {e.colno}); "
                             f"write one JSON object per line") from None
        if not isinstance(obj, dict):
            raise XlingError(f"{where}: expected a JSON object, found {type(obj).__name__}")
        for column, option in ((cfg.text_column, "text_column"), (cfg.lang_column, "lang_column")):
            if column not in obj:
                raise missing_column(where, column, option, obj)
        seg = check.segment(obj[cfg.text_column], obj[cfg.lang_column], obj.get(cfg.id_column),
                            f"{path.name}:{n}", where)
        if seg is not None:
            yield seg
