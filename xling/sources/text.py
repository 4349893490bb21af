"""Plain-text source: one segment per non-empty line, the language from the file name.

    [corpus]
    source = "text"
    paths = ["data/en.txt", "data/wiki.fr.txt", "more/"]   # files, or folders of *.txt

The language is the last dotted part of the name before `.txt` (`en.txt`,
`wiki.fr.txt`, `news.pt-BR.txt`). A folder may instead hold a `manifest.tsv` with
one `path<TAB>lang` line per file (paths relative to the folder; `#` starts a
comment), for names that do not say their language.

Keys are `"<file stem>:<line>"` (line numbers from 1): plain text is not aligned
across languages, so every line is its own group.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

from xling.errors import XlingError
from xling.files import iter_lines, line_spans, read_lines
from xling.langs import check_lang
from xling.sources import Segment

if TYPE_CHECKING:
    from xling.corpus import CorpusConfig

MANIFEST = "manifest.tsv"


def lang_from_name(path: Path, suffix: str = ".txt") -> str:
    """`en.txt`, `corpus.en.txt` -> "en"; with suffix="" also `corpus.en` -> "en"."""
    name = path.name
    if suffix and name.endswith(suffix):
        name = name[: -len(suffix)]
    code = name.rsplit(".", 1)[-1]
    return check_lang(code, f"the file name {path} (name files <name>.<lang>.txt, or list them in {MANIFEST})")


def read_manifest(path: Path) -> list[tuple[Path, str]]:
    """(file, lang) pairs from a `path<TAB>lang` manifest; paths relative to its folder."""
    out = []
    for n, line in enumerate(read_lines(path, "manifest"), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cols = line.rstrip("\r").split("\t")
        if len(cols) != 2 or not cols[0].strip():
            raise XlingError(f"manifest {path} line {n}: expected `path<TAB>lang`, got {line!r}")
        lang = check_lang(cols[1].strip(), f"manifest {path} line {n}")
        out.append((path.parent / cols[0].strip(), lang))
    if not out:
        raise XlingError(f"manifest {path} lists no files; add `path<TAB>lang` lines")
    return out


def list_files(paths: list[str]) -> list[tuple[Path, str]]:
    """Every (file, lang) named by corpus.paths: files, folders of *.txt, or folders with a manifest."""
    if not paths:
        raise XlingError("corpus.paths is empty; list the text files or folders to read")
    out: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            if (p / MANIFEST).is_file():
                out += read_manifest(p / MANIFEST)
                continue
            files = sorted(p.glob("*.txt"))
            if not files:
                raise XlingError(f"folder {p} has no *.txt files and no {MANIFEST}; add files named <lang>.txt")
            out += [(f, lang_from_name(f)) for f in files]
        elif p.name == MANIFEST:
            out += read_manifest(p)
        elif p.exists():
            out.append((p, lang_from_name(p)))
        else:
            raise XlingError(f"input path {p} does not exist; check corpus.paths")
    return out


def read(cfg: CorpusConfig) -> Iterator[Segment]:
    return chain.from_iterable(read_unit(cfg, u) for u in units(cfg))


def units(cfg: CorpusConfig, size: int | None = None) -> Iterator[tuple[str, str, tuple | None]]:
    """(file, lang, span) pieces in reading order: whole files, or with `size` stretches of about `size` bytes
    (`files.line_spans`) that workers read independently."""
    files = list_files(cfg.paths)  # errors about names and paths come before any reading
    wanted = set(cfg.langs)
    for path, lang in files:
        if not wanted or lang in wanted:
            spans = line_spans(path, size) if size and path.is_file() else [None]
            yield from ((str(path), lang, span) for span in spans)


def read_unit(cfg: CorpusConfig, unit: tuple[str, str, tuple | None]) -> Iterator[Segment]:
    path, lang, span = Path(unit[0]), unit[1], unit[2]
    stem = path.name[:-4] if path.name.endswith(".txt") else path.name
    for n, line in enumerate(iter_lines(path, "text file", span), span[2] if span else 1):
        if line.strip():
            key = f"{stem}:{n}"
            yield Segment(lang=lang, key=key, text=line, group=key)
