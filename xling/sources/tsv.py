"""Translation pairs: a two-column TSV file, or two line-aligned plain files.

    [corpus]
    source = "tsv"
    pair_langs = ["en", "fr"]          # the languages of the two columns (or files), in order
    paths = ["pairs.tsv"]              # one or more TSV files: `english<TAB>french` per line
    # or
    paths = ["data/train.en", "data/train.fr"]   # two files, line n of one translates line n of the other

With two plain files, `pair_langs` may be left empty when the names say the
languages (`x.en`/`x.fr`, `en.txt`/`fr.txt`, `x.en.txt`). Both sides of pair n share
the key `"pair:<n>"` (n counts from 1 over all pairs read), so they align; each
pair is its own split group. Blank lines (and blank sides) are skipped, never
shifted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from xling.errors import XlingError
from xling.files import iter_lines, read_lines
from xling.langs import check_langs
from xling.sources import Segment
from xling.sources.text import lang_from_name

if TYPE_CHECKING:
    from xling.corpus import CorpusConfig


def _pair_langs(cfg: CorpusConfig, required: bool) -> list[str] | None:
    langs = list(cfg.pair_langs)
    if not langs and not required:
        return None
    if len(langs) != 2:
        raise XlingError(f"corpus.pair_langs must name the two languages of the pairs, e.g. "
                         f'pair_langs = ["en", "fr"] (got {langs})')
    return check_langs(langs, "corpus.pair_langs")


def read(cfg: CorpusConfig) -> Iterator[Segment]:
    paths = [Path(p) for p in cfg.paths]
    if not paths:
        raise XlingError("corpus.paths is empty; give one .tsv file or two line-aligned files")
    for p in paths:
        if not p.exists():
            raise XlingError(f"input path {p} does not exist; check corpus.paths")
        if p.is_dir():
            raise XlingError(f"input path {p} is a folder; the tsv source takes .tsv files or two aligned files")
    if all(p.suffix == ".tsv" for p in paths):
        langs = _pair_langs(cfg, required=True)
        return _tsv_pairs(paths, langs)
    if len(paths) != 2:
        raise XlingError(f"the tsv source takes .tsv files or exactly two line-aligned files, not {len(paths)} "
                         f"paths ({', '.join(map(str, paths))})")
    langs = _pair_langs(cfg, required=False)
    if langs is None:
        langs = [lang_from_name(p, suffix=".txt" if p.name.endswith(".txt") else "") for p in paths]
        if langs[0] == langs[1]:
            raise XlingError(f"{paths[0]} and {paths[1]} are both {langs[0]}; set corpus.pair_langs")
    return _parallel_pairs(paths, langs)


def _tsv_pairs(paths: list[Path], langs: list[str]) -> Iterator[Segment]:
    n = 0
    for path in paths:
        for line_no, line in enumerate(iter_lines(path, "TSV file"), 1):
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) != 2:
                raise XlingError(f"TSV file {path} line {line_no}: expected 2 tab-separated columns "
                                 f"({langs[0]}, {langs[1]}), found {len(cols)}; fix or remove the line")
            n += 1
            yield from _pair(n, langs, cols)


def _parallel_pairs(paths: list[Path], langs: list[str]) -> Iterator[Segment]:
    a, b = (read_lines(p, "parallel file") for p in paths)
    if len(a) != len(b):
        short, long_ = (paths[0], paths[1]) if len(a) < len(b) else (paths[1], paths[0])
        raise XlingError(f"parallel files are not line-aligned: {short} ends at line {min(len(a), len(b))} "
                         f"but {long_} has {max(len(a), len(b))} lines; give files with one translation per line")
    for n, cols in enumerate(zip(a, b, strict=True), 1):
        yield from _pair(n, langs, cols)


def _pair(n: int, langs: list[str], cols) -> Iterator[Segment]:
    key = f"pair:{n}"
    for lang, text in zip(langs, cols, strict=True):
        if text.strip():
            yield Segment(lang=lang, key=key, text=text, group=key)
