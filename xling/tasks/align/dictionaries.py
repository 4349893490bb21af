"""Bilingual dictionaries for lexicon induction: MUSE files, FreeDict, CLDR names, identical strings.

    pairs = load_dictionary("freedict", "en", "fr")        # [("house", "maison"), ...]
    pairs = load_dictionary("dicts/en-fr.txt", "en", "fr")  # MUSE format: "src tgt" per line
    idx, stats = filter_pairs(pairs, src_vecs.index, tgt_vecs.index)
    train, test = split_by_rank(idx, train_ranks=(0, 5000), test_ranks=(5000, 6500))

Sources (nothing is downloaded; each reads what is installed):
  - a MUSE-format file from the user: one pair per line, space or tab separated;
  - FreeDict (`apt-get install dict-freedict-eng-fra`): `/usr/share/dictd/freedict-<a>-<b>.index`
    + `.dict.dz`, read in both directions (eng-fra and fra-eng both give en-fr pairs);
  - CLDR names through Babel (`pip install babel`): languages, countries, scripts, currencies,
    months and days in both languages, ~1,000 mostly-name pairs per language.
Only single-word entries are kept, lowercased, NFC, with Arabic vowel marks and stand-alone
stress accents removed so they match running text.
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np

from xling.corpus import WORD
from xling.errors import XlingError
from xling.files import atomic_write_text, read_lines

FREEDICT_DIR = Path("/usr/share/dictd")
# ISO 639-1 -> the three-letter codes FreeDict names its files with (Romanian is "rom" there)
ISO3 = {"en": "eng", "fr": "fra", "de": "deu", "es": "spa", "it": "ita", "pt": "por", "ru": "rus",
        "ar": "ara", "fa": "fas", "nl": "nld", "pl": "pol", "sv": "swe", "tr": "tur", "ja": "jpn",
        "zh": "zho", "cs": "ces", "el": "ell", "hu": "hun", "fi": "fin", "da": "dan", "hi": "hin",
        "ko": "kor", "la": "lat", "no": "nor", "nb": "nob", "nn": "nno", "ro": "rom", "bg": "bul",
        "hr": "hrv", "sr": "srp", "sk": "slk", "sl": "slv", "uk": "ukr", "ga": "gle", "cy": "cym",
        "eo": "epo", "is": "isl", "lt": "lit", "lv": "lav", "et": "est", "sw": "swh", "id": "ind",
        "vi": "vie", "th": "tha", "he": "heb", "af": "afr", "ca": "cat", "eu": "eus", "gl": "glg",
        "br": "bre", "mk": "mkd", "ku": "kur", "oc": "oci", "gd": "gla", "sa": "san", "wo": "wol"}
# Arabic harakat, Quranic marks and tatweel; stand-alone combining grave/acute (Russian stress marks:
# after NFC an accented Latin letter is one code point, so only marks without a precomposed form remain)
_MARKS = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06dc\u06df-\u06e8\u06ea-\u06ed"
                    "\u0640\u0300\u0301]")
_BRACKETS = re.compile(r"<[^>]*>|\[[^\]]*\]|\([^)]*\)|\{[^}]*\}")
_LABEL = re.compile(r"^[A-Za-z]+:(\s|$)")  # "see:", "Note:", "Synonyms:" lines of FreeDict entries
_NUMBER = re.compile(r"^\d+\.\s*")
PARSER_VERSION = 1  # part of the FreeDict cache key: raise it when parsing or normalisation changes
_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def normalize_word(word: str) -> str:
    """NFC, lowercase, Arabic vowel marks and stand-alone stress accents removed."""
    return _MARKS.sub("", unicodedata.normalize("NFC", word.strip())).lower()


def single_word(text: str) -> str | None:
    """`text` normalised if it is exactly one word (as the corpus counts words), else None."""
    w = normalize_word(text)
    return w if w and WORD.fullmatch(w) else None


# ---------------------------------------------------------------------------- MUSE files

def read_dictionary(path: str | Path) -> list[tuple[str, str]]:
    """A MUSE-format dictionary: "src tgt" per line (space or tab); empty lines are skipped."""
    pairs = []
    for lineno, line in enumerate(read_lines(path, "dictionary file"), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise XlingError(f"dictionary file {path} line {lineno}: expected 'source target' (two words "
                             f"separated by a space or tab), found {len(parts)} fields")
        pairs.append((normalize_word(parts[0]), normalize_word(parts[1])))
    return pairs


def write_dictionary(path: str | Path, pairs: list[tuple[str, str]]) -> None:
    atomic_write_text(path, "".join(f"{s} {t}\n" for s, t in pairs))


# ---------------------------------------------------------------------------- FreeDict (dictd format)

def _b64(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64[c]
    return n


def parse_freedict(index_path: str | Path, dict_path: str | Path,
                   single_words: bool = False) -> list[tuple[str, list[str]]]:
    """(headword, [translations]) of every entry of a dictd `.index` + `.dict.dz` (or `.dict`) pair.

    The index gives each entry's byte offset and length (dictd base64) in the uncompressed data.
    An entry is its headword line ("word /pronunciation/ <pos>"), then translation lines, possibly
    numbered ("1. a, b"), then indented notes ("see:", "Synonyms:", "Note:") that are skipped.
    `single_words` skips multi-word headwords and translations (much faster on the 460k-entry eng-deu).
    """
    index_path, dict_path = Path(index_path), Path(dict_path)
    lines = read_lines(index_path, "FreeDict index")
    try:
        data = gzip.open(dict_path).read() if dict_path.suffix == ".dz" else dict_path.read_bytes()
    except (OSError, EOFError) as e:
        raise XlingError(f"FreeDict data {dict_path} cannot be read ({e}); reinstall the dict-freedict "
                         f"package") from None
    entries = []
    seen: set[tuple[int, int]] = set()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # half the time went to collections triggered by the growing list of entries
    try:
        for lineno, line in enumerate(lines, start=1):
            fields = line.split("\t")
            try:
                off, size = _b64(fields[1]), _b64(fields[2])
            except (KeyError, IndexError):
                raise XlingError(f"FreeDict index {index_path} line {lineno}: expected "
                                 f"'headword<TAB>offset<TAB>length'") from None
            if len(fields) != 3:
                raise XlingError(f"FreeDict index {index_path} line {lineno}: expected 3 tab-separated "
                                 f"fields")
            head = fields[0].strip()
            if head.startswith(("00database", "00-database")) or (single_words and " " in head):
                continue
            if (off, size) in seen:  # several index headwords can point at one entry
                continue
            seen.add((off, size))
            if off + size > len(data):
                raise XlingError(f"FreeDict index {index_path} line {lineno}: entry past the end of "
                                 f"{dict_path}; the two files do not belong together")
            head, *body = data[off:off + size].decode("utf-8", errors="replace").split("\n")
            headword = _BRACKETS.sub("", head.split(" /")[0]).strip()
            translations = []
            for raw in body:
                s = raw.strip()
                if not s or _LABEL.match(s):
                    continue
                s = _BRACKETS.sub(" ", _NUMBER.sub("", s)).replace(";", ",")
                items = (t.strip(" .…!?") for t in s.split(","))
                translations += [t for t in items if t and not (single_words and " " in t)]
            if headword and translations:
                entries.append((headword, translations))
    finally:
        if gc_was_enabled:
            gc.enable()
    return entries


def freedict_pairs(src: str, tgt: str, root: str | Path = FREEDICT_DIR,
                   cache: bool = True) -> list[tuple[str, str]]:
    """Single-word (src, tgt) pairs from the installed FreeDict dictionaries, both directions merged.

    With `cache`, the pairs are kept as a MUSE file in `<xling cache>/freedict/` (`$XLING_CACHE` or
    ~/.cache/xling), keyed by the dictionary files' names, sizes and modification times: parsing
    eng-deu takes ~10 s, reading its cached pairs ~0.3 s; an updated package gets a new key.
    """
    root = Path(root)
    a, b = ISO3.get(src, src), ISO3.get(tgt, tgt)
    found = []
    for x, y, flip in ((a, b, False), (b, a, True)):
        index = root / f"freedict-{x}-{y}.index"
        data = root / f"freedict-{x}-{y}.dict.dz"
        if not data.exists():
            data = root / f"freedict-{x}-{y}.dict"
        if index.exists() and data.exists():
            found.append((index, data, flip))
    if not found:
        raise XlingError(f"no FreeDict dictionary for {src}-{tgt} in {root}; install one, e.g. "
                         f"apt-get install dict-freedict-{a}-{b} (or dict-freedict-{b}-{a})")
    cached = _freedict_cache_path(src, tgt, found) if cache else None
    if cached is not None and cached.is_file():
        return read_dictionary(cached)
    pairs: set[tuple[str, str]] = set()
    for index, data, flip in found:
        for head, translations in parse_freedict(index, data, single_words=True):
            h = single_word(head)
            if h is None:
                continue
            for t in translations:
                w = single_word(t)
                if w is not None:
                    pairs.add((w, h) if flip else (h, w))
    out = sorted(pairs)
    if cached is not None:
        try:
            write_dictionary(cached, out)
        except OSError:  # a read-only home: parse again next time
            pass
    return out


def _freedict_cache_path(src: str, tgt: str, found: list[tuple[Path, Path, bool]]) -> Path:
    from xling.files import cache_dir

    stamp = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for i, d, _ in found for p in (i, d))
    key = hashlib.sha256(f"{PARSER_VERSION}|{stamp}".encode()).hexdigest()[:16]
    return cache_dir() / "freedict" / f"{src}-{tgt}.{key}.txt"


# ---------------------------------------------------------------------------- CLDR names (Babel)

def cldr_pairs(src: str, tgt: str) -> list[tuple[str, str]]:
    """Single-word (src, tgt) pairs from CLDR display names: languages, territories, scripts,
    currencies, month and day names (Babel)."""
    try:
        from babel import Locale, UnknownLocaleError
    except ImportError:
        raise XlingError("CLDR dictionaries need Babel; pip install 'xling[align]' (or pip install babel)") \
            from None
    try:
        a, b = Locale.parse(src.replace("-", "_")), Locale.parse(tgt.replace("-", "_"))
    except (UnknownLocaleError, ValueError) as e:
        raise XlingError(f"CLDR has no locale for {e}; use a MUSE-format dictionary file instead") from None

    def tables(loc) -> list[dict]:
        return [dict(loc.languages), dict(loc.territories), dict(loc.scripts), dict(loc.currencies),
                dict(loc.months["format"]["wide"]), dict(loc.days["format"]["wide"])]

    pairs = set()
    for ta, tb in zip(tables(a), tables(b), strict=True):
        for key, name in ta.items():
            s, t = single_word(name), single_word(tb.get(key, ""))
            if s and t:
                pairs.add((s, t))
    return sorted(pairs)


# ---------------------------------------------------------------------------- choosing, filtering, splitting

def load_dictionary(spec: str, src: str, tgt: str) -> list[tuple[str, str]]:
    """`spec` = a MUSE-format file path ("{src}"/"{tgt}" are filled in: "dicts/{src}-{tgt}.txt"),
    "freedict", "cldr", or sources joined by "+" ("freedict+cldr")."""
    pairs: set[tuple[str, str]] = set()
    for part in spec.split("+"):
        part = part.strip()
        if part == "freedict":
            pairs.update(freedict_pairs(src, tgt))
        elif part == "cldr":
            pairs.update(cldr_pairs(src, tgt))
        else:
            pairs.update(read_dictionary(part.replace("{src}", src).replace("{tgt}", tgt)))
    return sorted(pairs)


BUILT_IN_DICTS = ("freedict", "cldr")


def dictionary_pairs(spec: str, src: str, tgt: str, cache_dir: str | Path | None = None,
                     log: Callable[[str], None] = print, fallback: str | None = "cldr") -> list[tuple[str, str]] | None:
    """Pairs from `spec` (see `load_dictionary`), else from `fallback` (CLDR names), else None (with a log line).

    Built-in sources (FreeDict, CLDR) are cached as MUSE files in `cache_dir`: parsing FreeDict's
    eng-deu takes ~10 s, reading the cached pairs a few ms. The demo's evaluation passes fallback=None:
    CLDR's ~1,000 mostly-name pairs leave a test set of a handful of words, which is no measurement."""
    for s in dict.fromkeys([spec, *([fallback] if fallback else [])]):
        built_in = all(part.strip() in BUILT_IN_DICTS for part in s.split("+"))
        cached = Path(cache_dir) / f"{src}-{tgt}.{s.replace('+', '_')}.txt" if cache_dir and built_in else None
        if cached is not None and cached.is_file():
            return read_dictionary(cached)
        try:
            pairs = load_dictionary(s, src, tgt)
        except XlingError as e:
            log(f"dictionary {s} for {src}-{tgt}: {e}")
            continue
        if not pairs:
            log(f"dictionary {s} for {src}-{tgt}: no single-word pair")
            continue
        if cached is not None:
            write_dictionary(cached, pairs)
        return pairs
    return None


def identical_pairs(src_words: list[str], tgt_words: list[str], max_rank: int = 0) -> np.ndarray:
    """(i, j) index pairs of strings present in both vocabularies (Søgaard et al. 2018's seed),
    optionally only among each side's `max_rank` most frequent words."""
    n_s = len(src_words) if max_rank <= 0 else min(max_rank, len(src_words))
    n_t = len(tgt_words) if max_rank <= 0 else min(max_rank, len(tgt_words))
    tgt_index = {w: j for j, w in enumerate(tgt_words[:n_t])}
    out = [(i, tgt_index[w]) for i, w in enumerate(src_words[:n_s]) if w in tgt_index]
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def filter_pairs(pairs: list[tuple[str, str]], src_index: dict[str, int],
                 tgt_index: dict[str, int]) -> tuple[np.ndarray, dict]:
    """Keep the pairs whose words are both in the vocabularies -> ((m, 2) row indices, coverage stats)."""
    kept = sorted({(src_index[s], tgt_index[t]) for s, t in pairs if s in src_index and t in tgt_index})
    src_words = {s for s, _ in pairs}
    stats = {"pairs": len(set(pairs)), "source_words": len(src_words), "pairs_in_vocab": len(kept),
             "source_words_in_vocab": len({i for i, _ in kept}),
             "source_vocab_covered": len({i for i, _ in kept}) / max(1, len(src_index))}
    return np.array(kept, dtype=np.int64).reshape(-1, 2), stats


def coverage_line(stats: dict, src: str, tgt: str) -> str:
    return (f"dictionary {src}-{tgt}: {stats['pairs']:,} pairs ({stats['source_words']:,} {src} words); "
            f"{stats['pairs_in_vocab']:,} pairs with both words in the vocabularies "
            f"({stats['source_words_in_vocab']:,} {src} words = {100 * stats['source_vocab_covered']:.1f}% "
            f"of the {src} vocabulary)")


def split_by_rank(pairs: np.ndarray, train_ranks: tuple[int, int] = (0, 5000),
                  test_ranks: tuple[int, int] = (5000, 6500)) -> tuple[np.ndarray, np.ndarray]:
    """Split (i, j) pairs by the source word's frequency rank i, as MUSE's train/test dictionaries are.

    A source word goes to train if train_ranks[0] <= i < train_ranks[1], to test if its rank is in
    test_ranks; every translation of a source word goes with it, so the splits share no source word.
    """
    if max(train_ranks[0], test_ranks[0]) < min(train_ranks[1], test_ranks[1]):
        raise XlingError(f"train ranks {list(train_ranks)} and test ranks {list(test_ranks)} overlap; "
                         f"give disjoint ranges such as [0, 5000] and [5000, 6500]")
    i = pairs[:, 0]
    train = pairs[(i >= train_ranks[0]) & (i < train_ranks[1])]
    test = pairs[(i >= test_ranks[0]) & (i < test_ranks[1])]
    return train, test
