"""Shards: encode -> shard -> read round-trips exactly; offsets, chars and counts agree with meta; the pair
index aligns equal keys in both argument orders; the reader memory-maps; bad input gets one clear line."""

import json
import os
import shutil
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from xling.corpus import SPLITS, Corpus
from xling.errors import XlingError
from xling.files import sha256_file
from xling.shards import ShardConfig, Shards, build_shards, choose_dtype
from xling.tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer

from .conftest import TINY

LANGS = ["en", "fr", "ru"]
# segment numbers per split and language, in file order. fr misses 3 and 7 and lists some out of order,
# ru misses 5 and has no test data at all, so pairs are not a plain diagonal and one split has none.
LAYOUT = {
    "train": {"en": list(range(12)), "fr": [0, 1, 2, 4, 6, 5, 8, 9, 11, 10], "ru": [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]},
    "valid": {"en": [12, 13, 14], "fr": [14, 13, 12], "ru": [13, 14]},
    "test": {"en": [15, 16], "fr": [16], "ru": []},
}
EXTRA = ["", " — naïve café", " 東京 ✓", " 2:14", " «quoted»"]  # rarer characters reach byte fallback


def _text(lang: str, n: int) -> str:
    return f"{TINY[lang][n % 6]}{EXTRA[n % 5]} ({n})"


def _key(n: int) -> str:
    return f"43.{n // 6 + 1}.{n % 6 + 1}"


def _write_corpus(root: Path) -> Corpus:
    for split, per_lang in LAYOUT.items():
        (root / split).mkdir(parents=True)
        for lang, ns in per_lang.items():
            (root / split / f"{lang}.txt").write_text("".join(_text(lang, n) + "\n" for n in ns), encoding="utf-8")
            (root / split / f"{lang}.keys").write_text("".join(_key(n) + "\n" for n in ns), encoding="utf-8")
    (root / "meta.json").write_text(json.dumps({"langs": LANGS}), encoding="utf-8")
    return Corpus(root)


def _train_tokenizer(out: Path, corpus: Corpus) -> Tokenizer:
    cfg = TokenizerConfig(vocab_size=300, min_frequency=1)  # byte-level BPE: 256 bytes + 8 specials + merges
    train_tokenizer(corpus, cfg, out, alpha=1.0)
    return load_tokenizer(out)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    corpus = _write_corpus(root / "corpus")
    tok = _train_tokenizer(root / "tokenizer", corpus)
    # batch_size 5: several encode_batch chunks per file, with a partial last one
    meta = build_shards(corpus, root / "tokenizer", ShardConfig(batch_size=5), root / "shards")
    return root, corpus, tok, meta


def test_round_trip_every_split_and_language(built):
    root, corpus, tok, meta = built
    sh = Shards(root / "shards", expect_tokenizer_hash=sha256_file(root / "tokenizer" / "tokenizer.json"))
    assert sh.langs == LANGS and meta["langs"] == LANGS
    assert sh.vocab_size == tok.get_vocab_size() == meta["vocab_size"]
    assert sh.specials == {"pad": 0, "bos": 1, "eos": 2, "unk": 3, "mask": 4}
    assert sh.lang_token_ids == {"en": 5, "fr": 6, "ru": 7}
    assert meta["dtype"] == "uint16" and sh.tokens("train", "en").dtype == np.uint16
    total_tokens = 0
    for split in SPLITS:
        for lang in LANGS:
            texts = corpus.texts(split, lang)
            assert len(texts) == len(LAYOUT[split][lang]) == sh.num_segments(split, lang)
            expected = [tok.encode(t, add_special_tokens=False).ids for t in texts]
            for i, (text, ids) in enumerate(zip(texts, expected, strict=True)):
                seg = sh.segment(split, lang, i)
                assert seg.tolist() == ids
                assert tok.decode(seg.tolist()) == text
                assert int(sh.chars(split, lang)[i]) == len(text)
            # offsets: start at 0, grow by each segment's length, end at the token count of meta and the file
            off = sh.offsets(split, lang)
            assert off.dtype == np.int64 and off[0] == 0
            assert np.diff(off).tolist() == [len(x) for x in expected]
            counts = meta["splits"][split][lang]
            assert counts == {"segments": len(texts), "tokens": sum(map(len, expected)),
                              "chars": sum(map(len, texts))}
            assert off[-1] == counts["tokens"] == len(sh.tokens(split, lang))
            assert (root / "shards" / split / f"{lang}.bin").stat().st_size == 2 * counts["tokens"]
            assert sh.tokens(split, lang).tolist() == [t for x in expected for t in x]
            assert sh.keys(split, lang) == corpus.keys(split, lang)
            total_tokens += counts["tokens"]
            assert counts["tokens"] == 0 or int(sh.tokens(split, lang).max()) < sh.vocab_size
    assert sh.segment("train", "ru", -1).tolist() == tok.encode(corpus.texts("train", "ru")[-1]).ids
    assert meta["tokenizer_sha256"] == sha256_file(root / "tokenizer" / "tokenizer.json")
    assert meta["throughput"]["text_mb"] > 0 and meta["throughput"]["tokens_per_s"] > 0
    assert json.loads((root / "shards" / "meta.json").read_text()) == meta
    assert total_tokens == sum(c["tokens"] for s in meta["splits"].values() for c in s.values())


def test_pairs_align_equal_keys_in_both_orders(built):
    root, corpus, _, meta = built
    sh = Shards(root / "shards")
    for split in SPLITS:
        for a, b in combinations(LANGS, 2):
            ka, kb = corpus.keys(split, a), corpus.keys(split, b)
            expected = [[i, kb.index(k)] for i, k in enumerate(ka) if k in kb]  # in a's order
            if not expected:
                with pytest.raises(XlingError, match=f"no {a}-{b} translation pairs in the {split} split"):
                    sh.pairs(split, a, b)
                assert f"{a}-{b}" not in sh.pair_counts(split)
                continue
            ab, ba = sh.pairs(split, a, b), sh.pairs(split, b, a)
            assert ab.shape == (len(expected), 2) and ab.dtype == np.int32
            assert ab.tolist() == expected
            assert ba.tolist() == [[j, i] for i, j in expected]  # columns follow the argument order
            assert [ka[i] for i in ab[:, 0]] == [kb[j] for j in ab[:, 1]]
            assert [kb[i] for i in ba[:, 0]] == [ka[j] for j in ba[:, 1]]
            assert meta["pairs"][f"{a}-{b}"][split] == sh.pair_counts(split)[f"{a}-{b}"] == len(expected)
    # the hand-made layout: fr lacks 3 and 7 in train, its valid is reversed; rows follow en (first in corpus)
    assert sh.pairs("train", "en", "fr").tolist()[3:6] == [[4, 3], [5, 5], [6, 4]]
    assert sh.pairs("valid", "fr", "en").tolist() == [[2, 0], [1, 1], [0, 2]]
    assert sh.pair_counts("test") == {"en-fr": 1}


def test_uint32_matches_uint16_and_parallelism_env_is_restored(built, tmp_path, monkeypatch):
    root, corpus, _, _ = built
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    meta = build_shards(corpus, root / "tokenizer", ShardConfig(dtype="uint32", batch_size=1000), tmp_path / "s32")
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    assert meta["dtype"] == "uint32"
    wide, narrow = Shards(tmp_path / "s32"), Shards(root / "shards")
    for split in SPLITS:
        for lang in LANGS:
            assert wide.tokens(split, lang).dtype == np.uint32
            np.testing.assert_array_equal(wide.tokens(split, lang), narrow.tokens(split, lang))
            np.testing.assert_array_equal(wide.offsets(split, lang), narrow.offsets(split, lang))
            n = meta["splits"][split][lang]["tokens"]
            assert (tmp_path / "s32" / split / f"{lang}.bin").stat().st_size == 4 * n


def test_dtype_choice_and_config_checks():
    assert choose_dtype(300) == np.uint16
    assert choose_dtype(65536) == np.uint16  # ids 0..65535 fit
    assert choose_dtype(65537) == np.uint32
    assert choose_dtype(300, "uint32") == np.uint32
    with pytest.raises(XlingError, match="uint16 cannot hold a vocabulary of 70,000"):
        choose_dtype(70_000, "uint16")
    with pytest.raises(ValueError, match="dtype must be one of"):
        ShardConfig(dtype="int8")
    with pytest.raises(ValueError, match="batch_size"):
        ShardConfig(batch_size=0)


def test_reader_memory_maps_and_returns_views(built):
    root, _, _, _ = built
    sh = Shards(root / "shards")
    toks = sh.tokens("train", "en")
    assert isinstance(toks, np.memmap) and not toks.flags.writeable
    seg = sh.segment("train", "en", 3)
    assert np.shares_memory(seg, toks) and not seg.flags.owndata  # a view, no copy
    for arr in (sh.offsets("train", "en"), sh.chars("train", "en"), sh.pairs("train", "en", "fr")):
        assert isinstance(arr, np.memmap) or isinstance(arr.base, np.memmap)
    assert sh.tokens("train", "en") is toks  # mapped once
    assert len(sh.tokens("test", "ru")) == 0 and sh.num_segments("test", "ru") == 0  # empty file, no mmap error
    with pytest.raises(IndexError):
        sh.segment("train", "en", 12)


def test_bad_input_gets_clear_errors(built, tmp_path):
    root, corpus, _, _ = built
    with pytest.raises(XlingError, match=r"shards directory .*nope does not exist; build it with `xling shard --run"):
        Shards(tmp_path / "nope")
    with pytest.raises(XlingError, match=r"encoded with tokenizer sha256 .* but the tokenizer given has 000000000000"
                                         r"…; re-encode with `xling shard"):
        Shards(root / "shards", expect_tokenizer_hash="0" * 64)
    sh = Shards(root / "shards")
    with pytest.raises(XlingError, match=r"language 'de' is not in the shards .*\(they have en, fr, ru\)"):
        sh.segment("train", "de", 0)
    with pytest.raises(XlingError, match="language 'de' is not in the shards"):
        sh.pairs("train", "en", "de")
    with pytest.raises(XlingError, match="unknown split 'dev'; choose one of train, valid, test"):
        sh.tokens("dev", "en")
    with pytest.raises(XlingError, match="two different languages"):
        sh.pairs("train", "en", "en")


def test_corrupt_shards_and_corpus_are_reported(built, tmp_path):
    root, corpus, _, _ = built
    # a truncated .bin no longer matches its offsets
    copy = tmp_path / "shards"
    build_shards(corpus, root / "tokenizer", ShardConfig(), copy)
    with open(copy / "train" / "fr.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(XlingError, match=r"fr\.bin has 10 bytes, expected .* rebuild with"):
        Shards(copy).tokens("train", "fr")
    # a corpus whose text and keys disagree: an error, and the old shards stay untouched (atomic)
    bad = tmp_path / "bad"
    _write_corpus(bad)
    with open(bad / "valid" / "ru.txt", "a", encoding="utf-8") as f:
        f.write("one line too many\n")
    before = (copy / "meta.json").read_text()
    with pytest.raises(XlingError, match=r"ru\.txt has 3 lines but its \.keys file has 2"):
        build_shards(Corpus(bad), root / "tokenizer", ShardConfig(), copy)
    assert (copy / "meta.json").read_text() == before
    # no temporary directory left: the input was at fault (a stop for another reason keeps the files encoded)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "shards"]
    with pytest.raises(XlingError, match="no tokenizer at .*missing-tokenizer"):
        build_shards(corpus, tmp_path / "missing-tokenizer", ShardConfig(), tmp_path / "x")


def test_crlf_corpus_encodes_like_lf_and_non_utf8_is_reported(built, tmp_path):
    root, corpus, _, _ = built
    crlf = tmp_path / "crlf"
    _write_corpus(crlf)
    for p in crlf.glob("*/*.txt"):
        p.write_bytes(p.read_bytes().replace(b"\n", b"\r\n"))
    build_shards(Corpus(crlf), root / "tokenizer", ShardConfig(batch_size=4), tmp_path / "s")
    a, b = Shards(tmp_path / "s"), Shards(root / "shards")
    for split in SPLITS:
        for lang in LANGS:
            np.testing.assert_array_equal(a.tokens(split, lang), b.tokens(split, lang))
            np.testing.assert_array_equal(a.chars(split, lang), b.chars(split, lang))
    with open(crlf / "test" / "fr.txt", "ab") as f:
        f.write(b"caf\xe9\r\n")
    with pytest.raises(XlingError, match=r"corpus file .*fr\.txt is not UTF-8"):
        build_shards(Corpus(crlf), root / "tokenizer", ShardConfig(), tmp_path / "s2")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through Linux /proc")
def test_encoding_uses_rust_threads_even_when_the_env_disables_them(built, tmp_path):
    """TOKENIZERS_PARALLELISM=false (often set globally) would encode on one core: build_shards lifts it."""
    root, _, _, _ = built
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from xling.corpus import Corpus\n"
        "from xling.shards import ShardConfig, build_shards\n"
        "from xling.tokenizer import load_tokenizer\n"
        "n = lambda: len(os.listdir('/proc/self/task'))\n"
        "load_tokenizer(sys.argv[1] + '/tokenizer').encode_batch_fast(['a b c'] * 500)\n"
        "before = n()\n"
        "build_shards(Corpus(sys.argv[1] + '/corpus'), Path(sys.argv[1] + '/tokenizer'), ShardConfig(), "
        "Path(sys.argv[2]))\n"
        "print('THREADS', before, n(), os.environ['TOKENIZERS_PARALLELISM'])\n"
    )
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", script, str(root), str(tmp_path / "s")], env=env,
                         capture_output=True, text=True, check=True).stdout
    before, after, flag = out.split("THREADS")[1].split()
    assert int(after) >= int(before) + 2  # the rayon pool started (2 workers); the env value is back
    assert flag == "false"


def test_two_workers_write_what_one_writes(built, tmp_path):
    root, corpus, _, meta = built
    meta2 = build_shards(corpus, root / "tokenizer", ShardConfig(batch_size=5, workers=2), tmp_path / "s2")
    one = {str(p.relative_to(root / "shards")): p.read_bytes() for p in (root / "shards").rglob("*") if p.is_file()}
    two = {str(p.relative_to(tmp_path / "s2")): p.read_bytes() for p in (tmp_path / "s2").rglob("*") if p.is_file()}
    assert one.pop("meta.json") and two.pop("meta.json")
    assert one == two and len(one) > 3 * len(SPLITS) * len(LANGS)
    for m in (meta, meta2):
        m.pop("throughput")
    assert meta == meta2


def test_a_stopped_run_leaves_no_output_and_the_next_encodes_only_what_is_missing(built, tmp_path, monkeypatch):
    import xling.shards as shards_mod

    root, _, _, meta = built
    shutil.copytree(root / "corpus", tmp_path / "corpus")
    corpus = Corpus(tmp_path / "corpus")
    encode, calls = shards_mod._encode_language, []

    class Stop(Exception):  # the process stopped in the middle of the fourth file
        pass

    armed = []  # stop once, at the fourth file of a run, when armed

    def stop_at_fourth(*args, **kw):
        calls.append(args[-2])
        if armed and len(calls) == 4:
            armed.clear()
            raise Stop
        return encode(*args, **kw)

    monkeypatch.setattr(shards_mod, "_encode_language", stop_at_fourth)
    armed.append(True)
    with pytest.raises(Stop):
        build_shards(corpus, root / "tokenizer", ShardConfig(batch_size=5), tmp_path / "s")
    assert not (tmp_path / "s").exists() and len(list(tmp_path.glob(".s.partial-*"))) == 1
    calls.clear()
    build_shards(corpus, root / "tokenizer", ShardConfig(batch_size=5), tmp_path / "s")
    n_files = len(SPLITS) * len(LANGS)
    assert len(calls) == n_files - 3  # the three finished files were kept
    one = {str(p.relative_to(root / "shards")): p.read_bytes() for p in (root / "shards").rglob("*") if p.is_file()}
    two = {str(p.relative_to(tmp_path / "s")): p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()}
    assert one.pop("meta.json") and two.pop("meta.json") and one == two  # no marker or partial file left in it
    assert not list(tmp_path.glob(".s.*"))
    # changed inputs (a corpus file rewritten) are a new stamp: everything is encoded again
    armed.append(True)
    with pytest.raises(Stop):
        calls.clear()
        build_shards(corpus, root / "tokenizer", ShardConfig(batch_size=5), tmp_path / "t")
    text = tmp_path / "corpus" / "train" / f"{LANGS[0]}.txt"
    os.utime(text, ns=(text.stat().st_atime_ns, text.stat().st_mtime_ns + 10**9))
    calls.clear()
    build_shards(corpus, root / "tokenizer", ShardConfig(batch_size=5), tmp_path / "t")
    assert len(calls) == n_files and not list(tmp_path.glob(".t.*"))
