"""Word-embedding alignment: Procrustes, CSLS, adversarial, refinement, BLI, .vec files, dictionaries."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest

from xling.errors import XlingError
from xling.tasks.align.adversarial import adversarial
from xling.tasks.align.config import MUSE_TEST, MUSE_TRAIN, AlignConfig, rank_bands
from xling.tasks.align.csls import Space, csls_reference, evaluate_bli
from xling.tasks.align.dictionaries import (
    filter_pairs,
    freedict_pairs,
    identical_pairs,
    parse_freedict,
    read_dictionary,
    split_by_rank,
)
from xling.tasks.align.mapping import criterion, learn_mapping, normalize_embeddings, procrustes
from xling.tasks.align.run import copy_baseline, run_align
from xling.tasks.align.vectors import Vectors, model_word_vectors, read_vec, train_static_vectors, write_vec


def rotation(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))  # (d, d), a uniformly random orthogonal matrix


def clustered(n: int, d: int, clusters: int, seed: int, noise: float = 0.2) -> np.ndarray:
    """Vectors around random centres: a distribution with no rotational symmetry, like word vectors."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    return (centres[rng.integers(clusters, size=n)] + noise * rng.normal(size=(n, d))).astype(np.float32)


def tiny_cfg(**kw) -> AlignConfig:
    base = dict(adv_hidden=128, adv_threads=1, refine_iters=3, refine_max_rank=0, select_max_rank=0,
                select_pairs=0, normalize="", write_vectors=False)
    return AlignConfig(**{**base, **kw})


# ---------------------------------------------------------------------------- Procrustes

def test_procrustes_recovers_a_random_rotation_exactly():
    x = np.random.default_rng(0).normal(size=(200, 16))
    r = rotation(16, 1)
    w = procrustes(x, x @ r.T)
    np.testing.assert_allclose(w, r, atol=1e-6)
    np.testing.assert_allclose(w @ w.T, np.eye(16), atol=1e-10)


def test_procrustes_equals_the_closed_form():
    # 90-degree rotation in the plane, by hand: (1, 0) -> (0, 1), (0, 1) -> (-1, 0)
    w = procrustes(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 1.0], [-1.0, 0.0]]))
    np.testing.assert_allclose(w, [[0.0, -1.0], [1.0, 0.0]], atol=1e-12)
    # a fixed noisy case against U V^T from numpy's SVD of B^T A
    a = np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [2.0, 0.1, -0.7], [-1.2, 0.4, 0.9]])
    b = np.array([[0.9, 2.1, 0.4], [0.2, -0.8, 2.2], [2.1, 0.0, -0.5], [-1.0, 0.5, 1.1]])
    u, _, vt = np.linalg.svd(b.T @ a)
    np.testing.assert_allclose(procrustes(a, b), u @ vt, atol=1e-12)
    # and it is the best orthogonal map: no random rotation fits better
    best = np.linalg.norm(a @ procrustes(a, b).T - b)
    assert all(best <= np.linalg.norm(a @ rotation(3, s).T - b) for s in range(50))


def test_normalize_embeddings_center_and_renorm():
    x = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    y = normalize_embeddings(x, "renorm,center,renorm")
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-6)
    mid = np.array([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]])  # after the first renorm
    mid -= mid.mean(axis=0)
    np.testing.assert_allclose(y, mid / np.linalg.norm(mid, axis=1, keepdims=True), atol=1e-6)


# ---------------------------------------------------------------------------- retrieval

def test_csls_equals_brute_force_and_chunking_changes_nothing():
    rng = np.random.default_rng(3)
    src, tgt = rng.normal(size=(30, 8)), rng.normal(size=(40, 8))
    k = 5
    # reference written out here: cosines, each side's mean cosine to its k nearest in the other space
    s = src / np.linalg.norm(src, axis=1, keepdims=True)
    t = tgt / np.linalg.norm(tgt, axis=1, keepdims=True)
    cos = s @ t.T
    r_src = np.array([np.sort(row)[-k:].mean() for row in cos])
    r_tgt = np.array([np.sort(col)[-k:].mean() for col in cos.T])
    ref = 2 * cos - r_src[:, None] - r_tgt[None, :]
    np.testing.assert_allclose(csls_reference(src, tgt, k), ref, atol=1e-12)
    order = np.argsort(-ref, axis=1, kind="stable")[:, :3]
    for rows in (0, 1, 7):  # whole matrix, one row at a time, uneven chunks
        scores, idx = Space(src, tgt, csls_k=k, chunk_rows=rows).s2t(np.arange(30), 3, "csls")
        np.testing.assert_array_equal(idx, order)
        np.testing.assert_allclose(scores, np.take_along_axis(ref, order, axis=1), atol=1e-5)
    scores, idx = Space(src, tgt, csls_k=k, chunk_rows=4).t2s(np.arange(40), 2, "csls")
    np.testing.assert_array_equal(idx, np.argsort(-ref.T, axis=1, kind="stable")[:, :2])


def test_bf16_candidates_rescored_in_fp32_equal_the_exact_search():
    # clustered vectors: many near-ties among the top candidates, where bf16 rounding could reorder them
    src, tgt = clustered(300, 64, 20, seed=1, noise=0.3), clustered(2000, 64, 20, seed=2, noise=0.3)
    ref = csls_reference(src, tgt, 10)  # (300, 2000) numpy float64
    fast, exact = Space(src, tgt, csls_k=10, chunk_rows=64), Space(src, tgt, csls_k=10, bf16=False)
    np.testing.assert_allclose(fast.r("tgt").numpy(), exact.r("tgt").numpy(), atol=1e-6)
    for how in ("nn", "csls"):
        (vf, i_f), (ve, ie) = fast.s2t(np.arange(300), 10, how), exact.s2t(np.arange(300), 10, how)
        np.testing.assert_array_equal(i_f, ie)
        np.testing.assert_allclose(vf, ve, atol=1e-5)  # fp32-exact values, not bf16's ~1e-2
    order = np.argsort(-ref, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(fast.s2t(np.arange(300), 10, "csls")[1], order)
    np.testing.assert_array_equal(fast.t2s(np.arange(2000), 1, "csls")[1][:, 0], ref.argmax(axis=0))
    with pytest.raises(ValueError, match="csls_vocab 1000 must be 0"):
        AlignConfig(csls_vocab=1000, refine_max_rank=15000)


def test_csls_reduces_hubness():
    # every query carries a shared direction c; a few "hub" targets point along c, so plain cosine
    # sends many queries to a hub while CSLS discounts targets that are close to everything
    rng = np.random.default_rng(0)
    n, d = 300, 32
    c = rng.normal(size=d)
    c /= np.linalg.norm(c)
    tgt = rng.normal(size=(n, d))
    tgt /= np.linalg.norm(tgt, axis=1, keepdims=True)
    src = tgt + 1.5 * rng.normal(size=(n, d)) / np.sqrt(d) + 1.5 * c
    tgt[:3] = c + 0.3 * rng.normal(size=(3, d)) / np.sqrt(d)  # the hubs (their own queries are rows 0-2)
    gold = np.stack([np.arange(n), np.arange(n)], axis=1)
    space = Space(src, tgt, csls_k=10)
    hub_share, p1 = {}, {}
    for how in ("nn", "csls"):
        _, idx = space.s2t(np.arange(n), 1, how)
        hub_share[how] = np.bincount(idx[:, 0], minlength=n).max() / n
        p1[how] = evaluate_bli(space, gold, how, ks=(1,))[0][1]
    assert hub_share["nn"] > 0.3 and hub_share["csls"] < hub_share["nn"] / 2  # measured: 0.35 -> 0.14
    assert p1["csls"] > p1["nn"] + 0.2  # measured: 0.09 -> 0.42


def test_precision_at_k_on_a_hand_made_case():
    # targets on the unit circle at 0, 90, 180, 270 degrees; each source vector sits between two of
    # them, so its ranking is known: source i ranks targets (i, i+1, i+3, i+2) (mod 4) by cosine
    angles = np.deg2rad([0, 90, 180, 270])
    tgt = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    src = np.stack([np.cos(angles + np.deg2rad(30)), np.sin(angles + np.deg2rad(30))], axis=1)
    pairs = np.array([
        [0, 0],            # source 0: gold at rank 1
        [1, 3], [1, 2],    # source 1: two gold translations, the best at rank 2 (target 2)
        [2, 1],            # source 2: gold at rank 3 (2 -> 3, 3, 1, 0)
        [3, 1],            # source 3: gold at rank 4 (3 -> 3, 0, 2, 1)
    ])
    p, queries, correct = evaluate_bli(Space(src, tgt), pairs, "nn", ks=(1, 2, 3))
    np.testing.assert_array_equal(queries, [0, 1, 2, 3])
    np.testing.assert_array_equal(correct, [True, False, False, False])
    assert p == {1: 0.25, 2: 0.5, 3: 0.75}


# ---------------------------------------------------------------------------- unsupervised methods

@pytest.mark.parametrize("rot_seed", [102, 7])
def test_adversarial_with_restarts_recovers_a_rotation(rot_seed):
    # One adversarial run is a GAN: measured over 5 rotations x 3 seeds, a single run at these settings lands in
    # a wrong basin (P@1 ~0.00) 7 times of 15, on AMD Zen and under ATEN_CPU_CAPABILITY=avx2 alike, and which
    # runs fail changes with the CPU's rounding. The method's claim is the whole unsupervised pipeline: restarts,
    # refinement, and the best refined criterion kept (MUSE's model selection); that recovered all 30 of 30
    # (5 rotations x 3 seeds x both float paths), so this test asserts it, on two rotations.
    n = 600
    x = clustered(n, 8, 32, seed=0)
    r = rotation(8, rot_seed)
    y = (x @ r.T + 0.01 * np.random.default_rng(1).normal(size=x.shape)).astype(np.float32)
    cfg = tiny_cfg(adv_hidden=64, adv_batch=32, adv_epochs=5, adv_epoch_size=3200, adv_lr=1.0, adv_lr_decay=1.0,
                   adv_lr_shrink=1.0, adv_restarts=3, seed=1)
    w, info = learn_mapping("adversarial", x, y, None, None, None, cfg, log=lambda s: None)
    gold = np.stack([np.arange(n), np.arange(n)], axis=1)
    assert evaluate_bli(Space(x @ w.T, y), gold, "csls", ks=(1,))[0][1] > 0.95
    np.testing.assert_allclose(w, r, atol=0.05)  # refinement ends on the rotation itself
    raw = info["raw_w"]  # the kept run's adversarial map: lr 1 pulls it off a little, orthogonalisation holds it
    assert np.abs(raw @ raw.T - np.eye(8)).max() < 0.15
    assert len(info["runs"]) == 3
    kept = max(run["refined_criterion"] for run in info["runs"])
    assert kept > 0.99 and kept >= max(run["criterion"] for run in info["runs"])


def test_adversarial_is_deterministic_for_a_seed():
    x = clustered(600, 8, 32, seed=0)
    y = (x @ rotation(8, 102).T).astype(np.float32)
    short = tiny_cfg(adv_hidden=64, adv_batch=32, adv_epochs=1, adv_epoch_size=640, seed=5)
    w1, _ = adversarial(x, y, short, log=lambda s: None, score=lambda w: criterion(x, y, w, short))
    w2, _ = adversarial(x, y, short, log=lambda s: None, score=lambda w: criterion(x, y, w, short))
    np.testing.assert_array_equal(w1, w2)


def test_identical_strings_seed_then_refinement():
    n, d = 400, 8
    x = clustered(n, d, 32, seed=2)
    r = rotation(d, 3)
    y = (x @ r.T + 0.01 * np.random.default_rng(4).normal(size=x.shape)).astype(np.float32)
    src_words = [f"s{i}" for i in range(n)]
    tgt_words = [f"t{i}" for i in range(n)]
    for i in range(0, 60, 3):  # 20 shared strings (names, numbers) at the right rows ...
        tgt_words[i] = src_words[i] = f"name{i}"
    for i, j in ((100, 200), (150, 250)):  # ... and two false friends
        src_words[i] = tgt_words[j] = f"false{i}"
    assert len(identical_pairs(src_words, tgt_words)) == 22
    w, info = learn_mapping("identical", x, y, src_words, tgt_words, None, tiny_cfg(), log=lambda s: None)
    gold = np.stack([np.arange(n), np.arange(n)], axis=1)
    assert evaluate_bli(Space(x @ w.T, y), gold, "csls", ks=(1,))[0][1] > 0.95
    np.testing.assert_allclose(w, r, atol=0.02)
    assert info["seed_pairs"] == 22 and info["history"][-1]["pairs"] > 0.9 * n  # mutual pairs grew


# ---------------------------------------------------------------------------- dictionaries

def test_split_by_rank_never_overlaps():
    rng = np.random.default_rng(0)
    pairs = np.stack([rng.integers(0, 100, 500), rng.integers(0, 300, 500)], axis=1)
    train, test = split_by_rank(pairs, (0, 50), (50, 80))
    assert set(train[:, 0]).isdisjoint(test[:, 0])
    assert train[:, 0].max() < 50 and test[:, 0].min() >= 50 and test[:, 0].max() < 80
    assert len(train) == (pairs[:, 0] < 50).sum()  # every translation goes with its source word
    with pytest.raises(XlingError, match="overlap"):
        split_by_rank(pairs, (0, 60), (50, 80))
    with pytest.raises(ValueError, match="overlap"):
        AlignConfig(train_ranks=[0, 5000], test_ranks=[4000, 6500])


def test_default_bands_fit_a_small_vocabulary():
    """A Bible's 6,674 source words: test on the 1,000 most frequent, train on ranks 1,000-5,000 (MUSE's test band,
    ranks 5,000-6,500, would be the rarest tail: CSLS P@1 0.03 against 0.47 on the same vectors)."""
    cfg = AlignConfig()
    assert cfg.train_ranks == [] and cfg.test_ranks == []  # fitted where the vocabulary is known
    assert rank_bands(cfg, 6674) == ((1000, 5000), (0, 1000))
    assert rank_bands(cfg, 5000) == ((1000, 5000), (0, 1000))  # the demo evaluation's 5,000 kept words
    assert rank_bands(cfg, 1000) == ((200, 1000), (0, 200))  # the test band stays in the most frequent fifth
    assert rank_bands(cfg, 3) == ((0, 3), (0, 0))  # no test band at all: P@k is skipped, not made up
    for n in range(0, 40_000, 7):
        (a, b), (c, d) = rank_bands(cfg, n)
        assert a <= b <= n and c <= d <= n // 5 and max(a, c) >= min(b, d)  # disjoint; test among the top fifth


def test_default_bands_keep_muse_on_a_large_vocabulary_and_explicit_bands_win():
    cfg = AlignConfig()
    assert rank_bands(cfg, 200_000) == (MUSE_TRAIN, MUSE_TEST) == ((0, 5000), (5000, 6500))
    assert rank_bands(cfg, 32_500) == (MUSE_TRAIN, MUSE_TEST)  # 6,500 is within its most frequent fifth
    assert rank_bands(cfg, 32_499) == ((1000, 5000), (0, 1000))
    given = AlignConfig(train_ranks=[0, 5000], test_ranks=[5000, 6500])
    assert rank_bands(given, 6674) == ((0, 5000), (5000, 6500))  # an explicit override is taken as given
    with pytest.raises(ValueError, match="overlap"):
        AlignConfig(train_ranks=[0, 1000], test_ranks=[500, 2000])
    with pytest.raises(ValueError, match="give both"):
        AlignConfig(train_ranks=[1000, 5000])


def test_run_align_fits_the_bands_to_the_source_vocabulary(tmp_path):
    n, d = 1000, 8
    x = clustered(n, d, 32, seed=5)
    src, tgt = Vectors([f"s{i}" for i in range(n)], x), Vectors([f"t{i}" for i in range(n)], x @ rotation(d, 6).T)
    pairs = [(f"s{i}", f"t{i}") for i in range(n)]
    res = run_align(src, tgt, tmp_path, src_lang="en", tgt_lang="fr", pairs=pairs,
                    cfg=tiny_cfg(methods=["procrustes"]), log=lambda s: None)
    d = res["dictionary"]
    assert (d["test_ranks"], d["train_ranks"]) == ([0, 200], [200, 1000])
    assert (d["test_words"], d["train_words"]) == (200, 800)
    assert res["metrics"]["align.test_words.en-fr"] == 200 and res["metrics"]["align.p_at_1.en-fr.copy"] == 0.0


def test_copy_baseline_counts_words_translated_as_themselves():
    src_words = ["david", "house", "jerusalem", "and"]
    tgt_index = {"david": 0, "maison": 1, "jérusalem": 2, "et": 3, "and": 4}
    # house -> maison; david -> david; jerusalem -> jérusalem; "and" -> et (while "and" is also a target word)
    test = np.array([[0, 0], [1, 1], [2, 2], [3, 3]])
    assert copy_baseline(test, src_words, tgt_index) == 0.25  # only david
    assert copy_baseline(np.array([[0, 1], [0, 0]]), src_words, tgt_index) == 1.0  # one of its translations
    assert copy_baseline(np.empty((0, 2), np.int64), src_words, tgt_index) == 0.0


def test_filter_pairs_and_muse_dictionary_file(tmp_path):
    path = tmp_path / "en-fr.txt"
    path.write_text("house maison\nhouse\tdemeure\n\nKing roi\nzebra zèbre\n", encoding="utf-8")
    pairs = read_dictionary(path)
    assert pairs == [("house", "maison"), ("house", "demeure"), ("king", "roi"), ("zebra", "zèbre")]
    idx, stats = filter_pairs(pairs, {"king": 0, "house": 1}, {"roi": 0, "maison": 1, "demeure": 2})
    assert idx.tolist() == [[0, 0], [1, 1], [1, 2]]
    assert stats["source_words_in_vocab"] == 2 and stats["pairs_in_vocab"] == 3 and stats["source_words"] == 3
    (tmp_path / "bad.txt").write_text("one two\nthree four five\n", encoding="utf-8")
    with pytest.raises(XlingError, match="line 2"):
        read_dictionary(tmp_path / "bad.txt")


def _dictd(tmp_path, name: str, entries: list[str]) -> None:
    """Write a dictd pair: entries concatenated, the index giving base64 offset and length."""
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    def enc(n: int) -> str:
        out = ""
        while True:
            out = b64[n % 64] + out
            n //= 64
            if n == 0:
                return out

    data, index = b"", []
    for text in entries:
        raw = text.encode("utf-8")
        index.append(f"{text.split(' /')[0].split(chr(10))[0].lower()}\t{enc(len(data))}\t{enc(len(raw))}")
        data += raw
    (tmp_path / f"{name}.index").write_text("\n".join(index) + "\n", encoding="utf-8")
    (tmp_path / f"{name}.dict.dz").write_bytes(gzip.compress(data))


def test_freedict_parser_on_a_hand_made_dictionary(tmp_path, monkeypatch):
    monkeypatch.setenv("XLING_CACHE", str(tmp_path / "cache"))
    _dictd(tmp_path, "freedict-eng-ara", [
        "00-database-info\nThis is a test dictionary.\n",
        "book /bʊk/ <n>\n1. كِتَابٌ, سِفْر\n2. a written work\n",
        "light /laɪt/\nنُور; ضَوْء <masc>\n see: {lamp}\n   Synonyms: {lamp}\n",
        "give up /ɡɪv ʌp/\nاِسْتَسْلَمَ\n",
    ])
    _dictd(tmp_path, "freedict-ara-eng", ["بَيْت /bajt/\nhouse, home\n   Note: also a verse of poetry\n"])
    entries = parse_freedict(tmp_path / "freedict-eng-ara.index", tmp_path / "freedict-eng-ara.dict.dz")
    assert entries == [("book", ["كِتَابٌ", "سِفْر", "a written work"]), ("light", ["نُور", "ضَوْء"]),
                       ("give up", ["اِسْتَسْلَمَ"])]
    pairs = freedict_pairs("en", "ar", root=tmp_path)  # both files, vowel marks stripped, single words
    assert pairs == sorted([("book", "كتاب"), ("book", "سفر"), ("light", "نور"), ("light", "ضوء"),
                            ("house", "بيت"), ("home", "بيت")])
    # the parsed pairs are cached per user, keyed by the files' size and mtime: the second call reads the
    # cache (edited here to prove it), an updated dictionary file gets a new key and is parsed again
    cached = list((tmp_path / "cache" / "freedict").glob("en-ar.*.txt"))
    assert len(cached) == 1 and read_dictionary(cached[0]) == pairs
    cached[0].write_text("book كتاب\n", encoding="utf-8")
    assert freedict_pairs("en", "ar", root=tmp_path) == [("book", "كتاب")]
    assert freedict_pairs("en", "ar", root=tmp_path, cache=False) == pairs
    os.utime(tmp_path / "freedict-ara-eng.index", ns=(0, 10**9))
    assert freedict_pairs("en", "ar", root=tmp_path) == pairs
    assert len(list((tmp_path / "cache" / "freedict").glob("en-ar.*.txt"))) == 2
    with pytest.raises(XlingError, match="apt-get install dict-freedict-eng-fra"):
        freedict_pairs("en", "fr", root=tmp_path)
    (tmp_path / "freedict-eng-ara.index").write_text("book\tA\n", encoding="utf-8")
    with pytest.raises(XlingError, match="line 1"):
        parse_freedict(tmp_path / "freedict-eng-ara.index", tmp_path / "freedict-eng-ara.dict.dz")


# ---------------------------------------------------------------------------- .vec files

def test_vec_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    words = ["the", "слово", "كلمة", "naïve", "x1"]  # (write_vec refuses words with spaces)
    vecs = Vectors(words, rng.normal(size=(5, 7)).astype(np.float32))
    write_vec(tmp_path / "a.vec", vecs)
    assert (tmp_path / "a.vec").read_text(encoding="utf-8").split("\n")[0] == "5 7"
    back = read_vec(tmp_path / "a.vec")
    assert back.words == words and back.index["كلمة"] == 2
    np.testing.assert_allclose(back.vecs, vecs.vecs, rtol=1e-5, atol=1e-6)
    assert read_vec(tmp_path / "a.vec", max_words=2).words == ["the", "слово"]
    # fastText files hold a few words with (non-breaking) spaces: the last d fields are the numbers
    (tmp_path / "nbsp.vec").write_text("2 2\nnew\u00a0york 0.5 1\nnew york 2 3.5\n", encoding="utf-8")
    odd = read_vec(tmp_path / "nbsp.vec")
    assert odd.words == ["new\u00a0york", "new york"] and odd.vecs.tolist() == [[0.5, 1.0], [2.0, 3.5]]


@pytest.mark.parametrize("text, match", [
    ("2 3\na 1 2 3\n", "promises 2 vectors but the file has 1"),
    ("x y\na 1 2 3\n", "line 1: expected 'n d'"),
    ("2 3\na 1 2 3\nb 1 2\n", "line 3: expected a word and 3 numbers, found 2"),
    ("2 3\na 1 2 3\nb 1 2 3 4\n", "line 3: expected a word and 3 numbers, found 4"),
    ("2 3\na 1 2 3\nb 1 two 3\n", "line 3: a vector value is not a number"),
    ("2 3\na 1 2 3\nb 1 nan 3\n", "line 3: .*nan"),
    ("3 2\nthe 1 2\nof 3 4\nthe 5 6\n", "bad.vec line 4: the word 'the' is listed again \\(first on line 2\\)"),
])
def test_bad_vec_files(tmp_path, text, match):
    path = tmp_path / "bad.vec"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(XlingError, match=match):
        read_vec(path)


def test_bad_vec_bytes_name_the_line(tmp_path):
    (tmp_path / "latin1.vec").write_bytes(b"2 2\na 1 2\ncaf\xe9 1 2\n")
    with pytest.raises(XlingError, match="line 3: bytes are not UTF-8"):
        read_vec(tmp_path / "latin1.vec")
    with pytest.raises(XlingError, match="does not exist"):
        read_vec(tmp_path / "missing.vec")


# ---------------------------------------------------------------------------- the task end to end

def test_run_align_writes_outputs_and_metrics(tmp_path):
    n, d = 400, 8
    x = clustered(n, d, 32, seed=5)
    y = x @ rotation(d, 6).T + 0.01 * np.random.default_rng(7).normal(size=x.shape)
    src = Vectors([f"s{i}" for i in range(n)], x)
    tgt = Vectors([f"t{i}" for i in range(n)], y)
    pairs = [(f"s{i}", f"t{i}") for i in range(n)] + [("s5", "t6"), ("unknown", "t1")]
    cfg = tiny_cfg(methods=["procrustes", "procrustes-refine"], train_ranks=[0, 200], test_ranks=[200, 400],
                   write_vectors=True)
    res = run_align(src, tgt, tmp_path, src_lang="en", tgt_lang="fr", pairs=pairs, cfg=cfg,
                    log=lambda s: None)
    assert res["dictionary"]["train_words"] == 200 and res["dictionary"]["test_words"] == 200
    m = res["metrics"]
    assert m["align.p_at_1.en-fr.procrustes.csls"] == 1.0 and m["align.p_at_1.en-fr.supervised"] == 1.0
    w = np.load(tmp_path / "W-procrustes.npy")
    np.testing.assert_allclose(w, rotation(d, 6), atol=1e-2)
    mapped = read_vec(tmp_path / "vectors" / "en-procrustes.vec")
    np.testing.assert_allclose(mapped.vecs, x @ w.T, atol=1e-4)
    assert json.loads((tmp_path / "results.json").read_text())["metrics"] == m
    assert "CSLS P@1" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "p_at_1_by_band.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # no identical strings and no dictionary: the method is skipped, and with nothing left it is an error
    with pytest.raises(XlingError, match="no alignment method could run"):
        run_align(src, tgt, tmp_path / "none", src_lang="en", tgt_lang="fr",
                  cfg=tiny_cfg(methods=["identical"]), log=lambda s: None)
    # vectors that did not come from a file (a model, user code) are checked too: NaN, unequal dimensions
    bad = Vectors(src.words, np.where(np.arange(n)[:, None] == 7, np.nan, x))
    with pytest.raises(XlingError, match="the en vector of 's7' \\(row 8\\) has inf or nan"):
        run_align(bad, tgt, tmp_path / "nan", src_lang="en", tgt_lang="fr", pairs=pairs, cfg=cfg,
                  log=lambda s: None)
    with pytest.raises(XlingError, match="dimension 8 but target vectors 9"):
        run_align(src, Vectors(tgt.words, np.ones((n, 9))), tmp_path / "dim", src_lang="en", tgt_lang="fr",
                  pairs=pairs, cfg=cfg, log=lambda s: None)
    assert not (tmp_path / "nan").exists() and not (tmp_path / "dim").exists()


# ---------------------------------------------------------------------------- vectors from text and models

def test_static_vectors_are_reproducible_and_in_frequency_order():
    pytest.importorskip("gensim")
    from xling.tasks.align.vectors import VectorsConfig

    texts = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"] * 30
    cfg = VectorsConfig(dim=8, min_count=2, epochs=2, seed=3)
    a, b = train_static_vectors(texts, cfg), train_static_vectors(texts, cfg)
    assert a.words[0] == "the" and a.words == b.words and "mat" in a.words
    np.testing.assert_array_equal(a.vecs, b.vecs)


def test_model_word_vectors_input_and_contextual():
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from xling.model import ModelConfig, Transformer

    texts = ["the light shines in the darkness", "свет во тьме светит",
             "la lumière luit dans les ténèbres"] * 5
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<pad>", "<s>", "</s>", "<unk>", "<mask>", "<en>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=tok.get_vocab_size(), n_layer=2, d_model=32, n_head=2,
                                    block_size=32))
    emb = model.wte.weight.detach()
    words = ["light", "свет", "darkness"]
    inp = model_word_vectors(model, tok, words, mode="input")
    assert inp.words == words
    for w, v in zip(inp.words, inp.vecs, strict=True):
        enc = tok.encode(f"x {w}")  # mid-sentence form: the pieces after "x", a lone space piece excluded
        ids = [i for i, t in list(zip(enc.ids, enc.tokens, strict=True))[1:] if t != "Ġ"]
        np.testing.assert_allclose(v, emb[ids].mean(0).numpy(), atol=1e-6)
    whole = model_word_vectors(model, tok, words, mode="input", whole_words_only=True)
    assert "свет" in whole.words and "light" not in whole.words  # 'свет' is one token here, 'light' three

    # contextual: "darkness" occurs in one sentence; its vector is the mean of its tokens' final states
    lang = 5
    ctx = model_word_vectors(model, tok, ["darkness", "absent"], mode="contextual", texts=texts[:1],
                             lang_token_id=lang)
    assert ctx.words == ["darkness"]
    enc = tok.encode(texts[0])
    pos = [i for i, (a, b) in enumerate(enc.offsets) if a < len(texts[0]) and b > texts[0].index("darkness")]
    with torch.no_grad():
        hidden = model(torch.tensor([[lang] + enc.ids]))[0]  # (T, D)
    np.testing.assert_allclose(ctx.vecs[0], hidden[[p + 1 for p in pos]].mean(0).numpy(), atol=1e-5)


def test_align_from_corpus_trains_vectors_and_falls_back_to_no_dictionary(tmp_path, fake_source):
    pytest.importorskip("gensim")
    from xling.corpus import Corpus, CorpusConfig, build_corpus
    from xling.tasks.align.command import align_from_corpus
    from xling.tasks.align.vectors import VectorsConfig, word_counts

    from .conftest import tiny_segments

    fake_source(tiny_segments(20))
    build_corpus(CorpusConfig(langs=["en", "fr", "ru"], valid_fraction=0.1, test_fraction=0.1),
                 tmp_path / "c")
    (tmp_path / "en-fr.txt").write_text("light lumière\nword parole\ngrace grâce\n", encoding="utf-8")
    cfg = tiny_cfg(methods=["procrustes", "identical"], train_ranks=[0, 20], test_ranks=[20, 60])
    logs: list[str] = []
    metrics = align_from_corpus(tmp_path / "c", tmp_path / "align", "en", ["fr", "ru"],
                                vectors_cfg=VectorsConfig(dim=8, min_count=1, epochs=1), cfg=cfg,
                                dictionary=str(tmp_path / "{src}-{tgt}.txt"), log=logs.append)
    counts = word_counts(Corpus(tmp_path / "c").texts("train", "en"))
    en = read_vec(tmp_path / "align" / "vectors" / "en.vec")
    assert sorted(en.words) == sorted(counts) and counts[en.words[0]] == max(counts.values())
    assert "align.p_at_1.en-fr.identical.csls" in metrics  # en-fr had a dictionary file
    assert not any(k.startswith("align.p_at_1.en-ru") for k in metrics)  # en-ru: no dictionary, no P@k
    assert any("en-ru" in line and "does not exist" in line for line in logs)
    assert json.loads((tmp_path / "align" / "metrics.json").read_text()) == metrics
    assert (tmp_path / "align" / "en-ru" / "W-identical.npy").exists()  # shared digits seed en-ru
