"""Tokenizer stage: fixed special ids, exact round trip, fertility/parity, alpha sampling, HF interop.

A tiny verse-aligned corpus (English, Russian, Arabic) is generated from word lists: sentence k uses the
same word indices in every language, so its lines are "translations" with equal keys.
"""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
from tokenizers import Tokenizer, models

from xling.corpus import Corpus, sampling_probs
from xling.errors import XlingError
from xling.tokenizer import (
    N_BYTES,
    SPECIAL_TOKENS,
    TokenizerConfig,
    build_tokenizer,
    format_report,
    lang_ids,
    lang_index,
    lang_tag,
    load_tokenizer,
    sample_plan,
    sample_training_text,
    special_ids,
    tag_langs,
    tokenizer_hash,
    tokenizer_report,
    train_tokenizer,
)

WORDS = {
    "en": "book house water sun moon son daughter man woman day night light earth sky sea mountain tree road "
          "city heart hand eye word bread king people name life peace truth".split(),
    "ru": "книга дом вода солнце луна сын дочь человек женщина день ночь свет земля небо море гора дерево "
          "дорога город сердце рука глаз слово хлеб царь народ имя жизнь мир правда".split(),
    "ar": "كتاب بيت ماء شمس قمر ولد بنت رجل امرأة يوم ليل نور أرض سماء بحر جبل شجرة طريق مدينة قلب يد عين "
          "كلمة خبز ملك شعب اسم حياة سلام حق".split(),
}
LANGS = ["en", "ru", "ar"]
UNSEEN = "Ωμέγα 漢字 🙂 naïve — ﷽"  # Greek, Han, emoji, Latin with diaeresis, a dash, an Arabic ligature


def _sentences(n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, len(WORDS["en"]), size=rng.integers(3, 9)).tolist() for _ in range(n)]


def _write(root, split: str, lang: str, texts: list[str], keys: list[str]) -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / split / f"{lang}.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    (root / split / f"{lang}.keys").write_text("".join(k + "\n" for k in keys), encoding="utf-8")


def make_corpus(root, langs=LANGS, n_train=None, n_test=40) -> Corpus:
    """Write the corpus layout by hand: {train,valid,test}/<lang>.txt + .keys, meta.json."""
    n_train = n_train or {lg: 300 for lg in langs}
    for split, n, seed in (("train", max(n_train.values()), 1), ("valid", 10, 2), ("test", n_test, 3)):
        sents = _sentences(n, seed)
        for lang in langs:
            m = n_train[lang] if split == "train" else n
            texts = [" ".join(WORDS[lang][i] for i in s) + "." for s in sents[:m]]
            _write(root, split, lang, texts, [f"{split}.{k}" for k in range(m)])
    (root / "meta.json").write_text(json.dumps({"langs": list(langs)}), encoding="utf-8")
    return Corpus(root)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """The default kind (bpe + byte fallback), trained through the public entry point."""
    out = tmp_path_factory.mktemp("run") / "tokenizer"
    report = train_tokenizer(corpus, TokenizerConfig(vocab_size=400), out, alpha=0.3)
    return out, report


def test_special_ids_and_language_tags(trained, corpus):
    out, _ = trained
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "report.json", "report.md", "tokenizer.json"]
    tok = load_tokenizer(out)
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i
    assert special_ids(tok) == {"pad": 0, "bos": 1, "eos": 2, "unk": 3, "mask": 4}
    assert lang_ids(tok, corpus.langs) == {"en": 5, "ru": 6, "ar": 7}
    for lang, i in lang_ids(tok, corpus.langs).items():
        assert tok.encode(lang_tag(lang)).ids == [i]  # one token each
    # no post-processor: plain text gets no BOS/EOS
    ids = tok.encode("book house.").ids
    assert ids and not set(ids) & set(range(8))
    assert tok.encode("cafe\u0301").ids == tok.encode("caf\u00e9").ids  # NFC normalizer
    meta = json.loads((out / "meta.json").read_text())
    assert meta["sha256"] == tokenizer_hash(out)
    assert meta["vocab_size"] == tok.get_vocab_size() == 400
    assert meta["langs"] == LANGS and meta["config"]["kind"] == "bpe"
    assert tag_langs(tok) == corpus.langs  # tags in corpus order, right after the specials
    assert [lang_index(tok, lg) for lg in corpus.langs] == [0, 1, 2]  # = tag id - 5
    unknown = r"no tag <fr> for language 'fr' \(its languages: en, ru, ar\)"
    with pytest.raises(XlingError, match=unknown):
        lang_ids(tok, ["fr"])
    with pytest.raises(XlingError, match=unknown):
        lang_index(tok, "fr")


@pytest.mark.parametrize("kind", ["bpe", "bytelevel-bpe", "unigram"])
def test_roundtrip_every_language_and_unseen_characters(corpus, kind):
    train = [t for lg in corpus.langs for t in corpus.texts("train", lg)]
    tok = build_tokenizer(train, TokenizerConfig(kind=kind, vocab_size=420), corpus.langs)
    assert tok.get_vocab_size() <= 420
    byte_ids = {tok.token_to_id(f"<0x{b:02X}>") for b in range(N_BYTES)} - {None}
    for lang in corpus.langs:
        for text in corpus.texts("test", lang):
            assert tok.decode(tok.encode(text).ids) == text
    for text in (UNSEEN, f"{corpus.texts('test', 'ar')[0]} {UNSEEN}", "book  house", "دروسّ نور"):
        ids = tok.encode(text).ids
        assert tok.decode(ids) == text
        assert 3 not in ids  # never <unk>: byte fallback (bpe, unigram) or byte-level alphabet
    if kind != "bytelevel-bpe":  # the unseen characters went through <0xNN> pieces
        assert len(byte_ids) == N_BYTES
        # "▁漢": the word-start marker, then the three UTF-8 bytes of U+6F22
        assert tok.encode("漢").ids == [tok.token_to_id(t) for t in ("▁", "<0xE6>", "<0xBC>", "<0xA2>")]
    else:  # byte-level also keeps leading spaces and newlines
        assert tok.decode(tok.encode("  book\nhouse ").ids) == "  book\nhouse "


def test_no_byte_fallback_gives_unk(corpus):
    train = [t for lg in corpus.langs for t in corpus.texts("train", lg)]
    tok = build_tokenizer(train, TokenizerConfig(vocab_size=200, byte_fallback=False), corpus.langs)
    ids = tok.encode("book 漢").ids
    assert ids.count(3) == 1 and tok.token_to_id("<0xE6>") is None  # no byte pieces at all
    assert tok.decode(ids) == "book "  # <unk> is special, skipped on decode: the character is lost


def test_fertility_and_parity_by_hand(trained, corpus):
    out, report = trained
    tok = load_tokenizer(out)
    for lang in corpus.langs:
        texts = corpus.texts("test", lang)
        n_tokens = sum(len(tok.encode(t).ids) for t in texts)
        n_words = sum(len(t.split()) for t in texts)  # generated text: words are the space-separated parts
        r = report["langs"][lang]
        assert r["tokens"] == n_tokens and r["words"] == n_words
        assert r["fertility"] == pytest.approx(n_tokens / n_words)
        assert r["chars_per_token"] == pytest.approx(sum(map(len, texts)) / n_tokens)
        assert r["unk_rate"] == 0.0 and r["byte_rate"] == 0.0 and r["roundtrip"] == 1.0
        en = [len(tok.encode(t).ids) for t in corpus.texts("test", "en")]
        mine = [len(tok.encode(t).ids) for t in texts]  # same keys, same order in this corpus
        assert r["parity"] == pytest.approx(statistics.median(m / e for m, e in zip(mine, en, strict=True)))
    assert report["pivot"] == "en" and report["langs"]["en"]["parity"] == 1.0
    shares = report["vocab_scripts"]
    assert {"Latin", "Cyrillic", "Arabic", "byte pieces"} <= set(shares)
    assert shares["byte pieces"]["entries"] == N_BYTES
    assert sum(v["share"] for v in shares.values()) == pytest.approx(1.0)
    md = (out / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "segments" not in line]
    assert rows[0].startswith("| en ") and "parity vs en" in md


def test_parity_exact_on_a_doubled_language_and_pivot_fallback(tmp_path, trained):
    """A 'language' whose verse is the pivot verse written twice has parity exactly 2 (bpe: words are
    tokenized independently); without English the first corpus language is the pivot."""
    tok = load_tokenizer(trained[0])
    root = tmp_path / "c"
    make_corpus(root, langs=["ru", "ar"])
    ru = Corpus(root).texts("test", "ru")
    _write(root, "test", "ar", [f"{t} {t}" for t in ru[:-5]], [f"test.{k}" for k in range(len(ru) - 5)])
    rep = tokenizer_report(tok, Corpus(root), "test")
    assert rep["pivot"] == "ru" and "English is not in the corpus" in rep["pivot_note"]
    assert rep["langs"]["ru"]["parity"] == 1.0
    assert rep["langs"]["ar"]["parity"] == 2.0 and rep["langs"]["ar"]["aligned"] == len(ru) - 5
    md = format_report(rep)
    assert "parity vs ru" in md and "English is not in the corpus" in md


def test_alpha_sample_follows_q(tmp_path):
    counts = {"en": 400, "ru": 100, "ar": 20}
    corpus = make_corpus(tmp_path / "c", n_train=counts)
    cfg = TokenizerConfig(max_sentences=300, seed=7)
    texts, info = sample_training_text(corpus, cfg, alpha=0.5)
    q = sampling_probs(counts, 0.5)
    assert info["sampled"] == sample_plan(counts, 0.5, 300) and len(texts) == 300
    for lang in counts:  # the plan rounds q * 300
        assert abs(info["sampled"][lang] - q[lang] * 300) < 1
    # count what was actually drawn, by the language of each line's first word
    got = {"en": 0, "ru": 0, "ar": 0}
    for t in texts:
        got[next(lg for lg in got if t.split()[0].strip(".") in WORDS[lg])] += 1
    assert got == info["sampled"]
    # the small language (20 lines, 39 wanted) is repeated whole, then topped up: each line 1 or 2 times
    ar = corpus.texts("train", "ar")
    reps = [texts.count(t) for t in ar]
    assert got["ar"] == 39 and sorted(reps) == [1] + [2] * 19
    # alpha = 1 keeps the natural mix, alpha = 0 is uniform
    assert sample_plan(counts, 1.0, 260) == {"en": 200, "ru": 50, "ar": 10}
    assert sample_plan(counts, 0.0, 300) == {"en": 100, "ru": 100, "ar": 100}


def test_hf_fast_tokenizer_encodes_like_ours(trained, corpus):
    transformers = pytest.importorskip("transformers")
    out, _ = trained
    tok = load_tokenizer(out)
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"))
    for lang in corpus.langs:
        for text in corpus.texts("test", lang)[:10] + [UNSEEN]:
            assert hf.encode(text, add_special_tokens=False) == tok.encode(text).ids
            assert hf.encode(text) == tok.encode(text).ids  # no post-processor adds specials
    assert hf.convert_tokens_to_ids(["<pad>", "<mask>", "<ar>"]) == [0, 4, 7]


def test_missing_or_corrupt_tokenizer_is_a_clear_error(tmp_path, trained):
    with pytest.raises(XlingError, match="no tokenizer"):
        load_tokenizer(tmp_path)
    with pytest.raises(XlingError, match="no tokenizer"):
        tokenizer_hash(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": ', encoding="utf-8")
    with pytest.raises(XlingError, match="not a valid tokenizer.json"):
        load_tokenizer(tmp_path)
    # a valid tokenizer.json that was not made by xling (other special tokens)
    Tokenizer(models.WordLevel({"[PAD]": 0, "hello": 1}, unk_token="[PAD]")).save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(XlingError, match="does not have <pad> at id 0"):
        load_tokenizer(tmp_path / "tokenizer.json")


def test_training_is_deterministic_for_a_seed(corpus, tmp_path):
    cfg = TokenizerConfig(vocab_size=400, max_sentences=500, seed=3)
    train_tokenizer(corpus, cfg, tmp_path / "a", alpha=0.3)
    train_tokenizer(corpus, cfg, tmp_path / "b", alpha=0.3)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert tokenizer_hash(tmp_path / "a") == tokenizer_hash(tmp_path / "b")


def test_config_validation():
    with pytest.raises(ValueError, match="kind"):
        TokenizerConfig(kind="wordpiece")
    with pytest.raises(ValueError, match="alpha"):
        TokenizerConfig(alpha=-0.1)
    with pytest.raises(ValueError, match="max_sentences"):
        TokenizerConfig(max_sentences=0)
    with pytest.raises(XlingError, match="vocab_size=100 is too small"):
        build_tokenizer(["a b"], TokenizerConfig(vocab_size=100), ["en"])
