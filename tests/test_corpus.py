"""Corpus: language sampling against the formula, honest splits, cleaning, the on-disk layout."""

import json
import unicodedata

import numpy as np
import pytest

from xling.corpus import (
    SPLITS,
    Corpus,
    CorpusConfig,
    build_corpus,
    clean_segments,
    clean_text,
    count_words,
    sampling_probs,
    split_of,
    text_hash,
)
from xling.errors import XlingError
from xling.sources import Segment

from .conftest import tiny_segments


def test_sampling_probs_match_formula():
    counts = {"en": 1000, "fr": 100, "sw": 10}
    n = np.array([1000, 100, 10], dtype=float)
    p = n / n.sum()
    for alpha in (0.0, 0.3, 0.5, 0.7, 1.0):
        q = p**alpha / (p**alpha).sum()
        got = sampling_probs(counts, alpha)
        assert list(got) == ["en", "fr", "sw"]
        np.testing.assert_allclose([got[k] for k in counts], q, rtol=1e-12)
    # alpha 1 keeps the natural mix, alpha 0 is uniform
    assert sampling_probs(counts, 1.0)["en"] == pytest.approx(1000 / 1110)
    assert sampling_probs(counts, 0.0)["sw"] == pytest.approx(1 / 3)
    # a language with no data is never sampled
    assert sampling_probs({"en": 5, "fr": 0}, 0.3) == {"en": 1.0, "fr": 0.0}


def test_split_is_by_group_and_stable():
    assert split_of("40.1", 0.1, 0.1) == split_of("40.1", 0.1, 0.1)
    groups = [f"{b}.{c}" for b in range(1, 67) for c in range(1, 30)]
    splits = [split_of(g, 0.1, 0.1) for g in groups]
    share = {s: splits.count(s) / len(splits) for s in SPLITS}
    assert share["test"] == pytest.approx(0.1, abs=0.02)
    assert share["valid"] == pytest.approx(0.1, abs=0.02)


def test_clean_text_normalises_and_collapses_space():
    decomposed = "e\u0301te\u0301\t\n  la"
    assert clean_text(decomposed) == unicodedata.normalize("NFC", "été la")
    assert clean_text(decomposed, "none") == "e\u0301te\u0301 la"


def test_clean_text_fast_path_equals_the_pattern():
    """Printable text takes str.split; the result must be the whitespace/control pattern's, on random strings
    over ASCII, Latin, the Unicode spaces and separators, and control characters."""
    import random

    from xling.corpus import _SPACE

    pool = [chr(c) for c in [*range(0x250), *range(0x2000, 0x2030), 0x3000, 0x85, 0xA0, 0x1680, 0x205F, 0xFEFF]]
    rng = random.Random(0)
    printable = 0
    for _ in range(20_000):
        s = "".join(rng.choice(pool) for _ in range(rng.randint(0, 10)))
        printable += s.isprintable()
        assert clean_text(s, "none") == _SPACE.sub(" ", s).strip()
    assert printable > 5_000  # both paths ran


def test_count_words_keeps_combining_marks():
    # Devanagari: \w in `re` breaks words at vowel signs; the regex pattern keeps each word whole
    assert count_words("नमस्ते दुनिया") == 2
    assert count_words("Hello, world! 42 times") == 4
    assert count_words("مرحبا بالعالم") == 2


def test_splits_are_chapter_disjoint_and_same_for_every_language(tmp_path, fake_source):
    fake_source(tiny_segments(chapters=40))
    meta = build_corpus(CorpusConfig(langs=["en", "fr", "ru"], valid_fraction=0.2, test_fraction=0.2),
                        tmp_path / "corpus")
    corpus = Corpus(tmp_path / "corpus")
    chapters = {}
    for split in SPLITS:
        keys = {lang: corpus.keys(split, lang) for lang in corpus.langs}
        assert keys["en"] == keys["fr"] == keys["ru"]  # same split for every language
        chapters[split] = {k.rsplit(".", 1)[0] for k in keys["en"]}
        assert chapters[split], f"{split} is empty"
    assert not chapters["train"] & chapters["test"]
    assert not chapters["train"] & chapters["valid"]
    assert not chapters["valid"] & chapters["test"]
    # every verse key lands in exactly one split
    all_keys = [k for s in SPLITS for k in corpus.keys(s, "en")]
    assert len(all_keys) == len(set(all_keys)) == 40 * 6
    assert meta["pairs"]["en-ru"]["train"] == len(corpus.keys("train", "en"))


def test_corpus_layout_pairs_and_meta(tmp_path, fake_source):
    fake_source(tiny_segments(chapters=30))
    build_corpus(CorpusConfig(langs=["en", "fr", "ru"], alpha=0.5), tmp_path / "c")
    c = Corpus(tmp_path / "c")
    lines = (tmp_path / "c" / "train" / "ru.txt").read_text(encoding="utf-8").splitlines()
    assert lines == c.texts("train", "ru")
    pairs = c.pairs("train", "en", "ru")
    assert len(pairs) == len(lines)
    en, ru = pairs[0]
    assert en.startswith("In the beginning") and ru.startswith("В начале")
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["langs"] == ["en", "fr", "ru"]
    assert meta["sampling"]["q"]["en"] == pytest.approx(1 / 3)  # equal sizes -> uniform for any alpha
    assert sum(meta["sampling"]["pair_q"].values()) == pytest.approx(1.0)


def test_hash_sets_on_disk_and_a_pair_count_in_parts_write_the_same_corpus(tmp_path, fake_source, monkeypatch):
    import xling.corpus as corpus_mod

    segments = tiny_segments(chapters=30)
    fake_source(segments + segments[:40])  # repeats: the dedup sets are consulted
    build_corpus(CorpusConfig(langs=["en", "fr", "ru"]), tmp_path / "memory")
    monkeypatch.setattr(corpus_mod, "SPILL_RUN", 4)  # every run of 4 hashes and more goes to a file
    monkeypatch.setattr(corpus_mod, "PAIR_PART", 3)  # the pair count in dozens of parts
    meta = build_corpus(CorpusConfig(langs=["en", "fr", "ru"]), tmp_path / "disk")
    files = [p.relative_to(tmp_path / "memory") for p in sorted((tmp_path / "memory").rglob("*")) if p.is_file()]
    assert files == [p.relative_to(tmp_path / "disk") for p in sorted((tmp_path / "disk").rglob("*")) if p.is_file()]
    assert all((tmp_path / "memory" / f).read_bytes() == (tmp_path / "disk" / f).read_bytes() for f in files)
    assert meta["dropped"]["duplicate"] == 40 and meta["pairs"]["en-ru"]["train"] > 50


def test_dedup_and_length_filters():
    segs = [Segment("en", "1", "same text", "g1"), Segment("en", "2", "same  text", "g2"),
            Segment("en", "3", "x" * 50, "g3"), Segment("en", "4", "   ", "g4"), Segment("en", "5", "ok", "g5")]
    buckets, dropped = clean_segments(segs, CorpusConfig(langs=["en"], max_chars=20, valid_fraction=0,
                                                         test_fraction=0))
    assert buckets["train"]["en"].texts == ["same text", "ok"]
    assert dropped == {"empty_or_short": 1, "too_long": 1, "duplicate": 1, "wrong_language": 0}
    kept, _ = clean_segments(segs, CorpusConfig(langs=["en"], max_chars=20, valid_fraction=0, test_fraction=0,
                                                dedup=False))
    assert kept["train"]["en"].texts == ["same text", "same text", "ok"]


def test_dedup_hash_is_blake2b_64_bits_the_same_everywhere():
    # hand value: int.from_bytes(hashlib.blake2b(b"In the beginning", digest_size=8).digest(), "big")
    assert text_hash("In the beginning") == 9797224272371089374
    assert text_hash("In the beginning") != text_hash("In the beginning.")


def test_duplicate_key_is_an_error():
    segs = [Segment("en", "k", "one", "g"), Segment("en", "k", "two", "g")]
    with pytest.raises(XlingError, match="share the alignment key"):
        clean_segments(segs, CorpusConfig(langs=["en"]))


@pytest.mark.parametrize("key", ["43.1\n2", "a\rb", "x\u2028y", ""])
def test_a_key_that_is_not_one_line_is_an_error(key):
    """Issue 21: a JSONL id with a line break desynchronised en.keys from en.txt (keys are stored one a line)."""
    segs = [Segment("en", "k0", "zero", "k0"), Segment("en", key, "one", key)]
    with pytest.raises(XlingError, match="empty or holds a line break"):
        clean_segments(segs, CorpusConfig(langs=["en"]))


@pytest.mark.parametrize("langs,msg", [(["en", "xx"], "unknown language code 'xx'"),
                                       (["en", "fr", "en"], "appears twice"),
                                       (["english"], "unknown language code")])
def test_bad_language_codes(langs, msg):
    with pytest.raises(XlingError, match=msg):
        CorpusConfig(langs=langs)


def test_missing_language_and_missing_corpus(tmp_path, fake_source):
    fake_source(tiny_segments(chapters=5))
    with pytest.raises(XlingError, match="no text found for language.*de"):
        build_corpus(CorpusConfig(langs=["en", "de"]), tmp_path / "c")
    assert not (tmp_path / "c").exists()  # nothing half-written
    with pytest.raises(XlingError, match="no corpus in"):
        Corpus(tmp_path / "nothing")


def test_a_language_emptied_by_a_length_filter_names_the_filter(tmp_path, fake_source):
    """Issue 21: a 10 MB single line got "no text found ... check corpus.langs"; the filter that dropped it and
    how many segments it dropped are the true cause."""
    segs = [*tiny_segments(chapters=2), Segment("de", "d1", "x" * 10_000_000, "g"),
            Segment("de", "d2", "", "g")]
    fake_source(segs)
    with pytest.raises(XlingError) as e:
        build_corpus(CorpusConfig(langs=["en", "de"]), tmp_path / "c")
    msg = str(e.value)
    assert "every de segment was dropped" in msg and "1 by corpus.max_chars=2000" in msg
    assert "1 by corpus.min_chars=1" in msg and "corpus.langs" not in msg
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("kw", [dict(max_chars=-5), dict(max_chars=0), dict(min_chars=-1),
                                dict(min_chars=10, max_chars=5), dict(max_segments=-1)])
def test_length_limits_that_keep_nothing_are_config_errors(kw):
    with pytest.raises(ValueError, match="corpus.m"):
        CorpusConfig(**kw)


def test_control_characters_never_split_a_segment(tmp_path, fake_source):
    segs = [Segment("en", "1", "one\x1ctwo\u2028three\rfour", "g"), Segment("en", "2", "five", "g")]
    fake_source(segs)
    build_corpus(CorpusConfig(langs=["en"], valid_fraction=0, test_fraction=0), tmp_path / "c")
    c = Corpus(tmp_path / "c")
    assert c.texts("train", "en") == ["one two three four", "five"]
    assert c.keys("train", "en") == ["1", "2"]


def test_a_base_corpus_is_kept_as_it_is_and_another_source_adds_a_language(tmp_path):
    """corpus.base: the base's files come first, unchanged; a TSV of en-it pairs adds it (aligned with the pivot
    lines it adds to en) and the en line that repeats base text is dropped as a duplicate."""
    import shutil

    from xling.corpus import build_corpus

    en = [f"The first book, chapter {i}, says a thing of its own." for i in range(60)]
    fr = [f"Le premier livre, chapitre {i}, dit une chose." for i in range(60)]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "en.txt").write_text("\n".join(en) + "\n", encoding="utf-8")
    (tmp_path / "src" / "fr.txt").write_text("\n".join(fr) + "\n", encoding="utf-8")
    build_corpus(CorpusConfig(source="text", paths=[str(tmp_path / "src")], langs=["en", "fr"],
                              valid_fraction=0.2, test_fraction=0.2), tmp_path / "base")
    pairs = [(f"An English line number {i} for the new language.", f"Una riga italiana numero {i}.")
             for i in range(40)] + [(en[3], "Il primo libro, capitolo 3.")]
    (tmp_path / "it.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in pairs), encoding="utf-8")
    before = {p.relative_to(tmp_path / "base"): p.read_bytes() for p in (tmp_path / "base").rglob("*.*")}
    meta = build_corpus(CorpusConfig(source="tsv", paths=[str(tmp_path / "it.tsv")], pair_langs=["en", "it"],
                                     langs=["en", "fr", "it"], base=str(tmp_path / "base"),
                                     valid_fraction=0.2, test_fraction=0.2), tmp_path / "new")
    new = Corpus(tmp_path / "new")
    assert new.langs == ["en", "fr", "it"] and meta["base"] == str(tmp_path / "base")
    for rel, data in before.items():
        if rel.name == "meta.json":
            continue
        now = (tmp_path / "new" / rel).read_bytes()
        assert now.startswith(data) and (now == data or rel.parts[-1].startswith("en."))  # fr untouched, en grown
    assert meta["dropped"]["duplicate"] == 1  # en[3] again, on the pivot side
    it_keys = {k for s in SPLITS for k in new.keys(s, "it")}
    assert len(it_keys) == 41
    for split in SPLITS:  # every it line has its en line in the same split, and the pair count says so
        got = new.pairs(split, "en", "it")
        assert len(got) == meta["pairs"].get("en-it", {}).get(split, 0) == len(new.texts(split, "it")) - (
            "pair:41" in new.keys(split, "it"))
        assert all(a.startswith("An English line number") for a, _ in got)
        assert meta["splits"][split]["fr"] == Corpus(tmp_path / "base").meta["splits"][split]["fr"]
    shutil.rmtree(tmp_path / "new")
    with pytest.raises(XlingError, match="must list them first and in that order"):
        build_corpus(CorpusConfig(source="tsv", paths=[str(tmp_path / "it.tsv")], pair_langs=["en", "it"],
                                  langs=["fr", "en", "it"], base=str(tmp_path / "base")), tmp_path / "new")
    assert not (tmp_path / "new").exists()
