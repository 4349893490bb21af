"""Objectives: masking statistics, exact batch layouts, InfoNCE against numpy, sampling against q,
reproducibility, and real forward passes through xling.model.Transformer (plus one run on real shards)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xling.batches import IGNORE, fit_pair, mask_tokens, resolve_pairs, smoothing_weights, target_span, token_counts
from xling.corpus import SPLITS, sampling_probs
from xling.encode import mean_pool
from xling.errors import XlingError
from xling.heldout import clm_eval
from xling.losses import info_nce
from xling.model import ModelConfig, Transformer
from xling.objectives import CLM, MLM, MT, NSP, OBJECTIVES, TLM, XNSP, Contrastive, build_objectives

V = 300
LANGS = ["en", "fr", "ru"]
PAD, BOS, EOS, MASK = 0, 1, 2, 4
TAGS = {"en": 5, "fr": 6, "ru": 7}
FIRST_REAL = 8  # ids 0..7 are specials and language tags


class FakeShards:
    """The `xling.shards.Shards` reader interface over in-memory arrays.

    segs: {split: {lang: [token list, ...]}}; pairs: {(split, a, b): [(i, j), ...]} with a before b.
    """

    def __init__(self, segs: dict, pairs: dict | None = None, langs=LANGS, vocab_size: int = V):
        self.langs = list(langs)
        self.vocab_size = vocab_size
        self.specials = {"pad": PAD, "bos": BOS, "eos": EOS, "unk": 3, "mask": MASK}
        self.lang_token_ids = {lg: 5 + i for i, lg in enumerate(self.langs)}
        self._tok, self._off, self._chars = {}, {}, {}
        for split in SPLITS:
            for lang in self.langs:
                seqs = segs.get(split, {}).get(lang, [])
                lens = [len(s) for s in seqs]
                self._tok[split, lang] = np.array([t for s in seqs for t in s], dtype=np.uint16)
                self._off[split, lang] = np.cumsum([0] + lens).astype(np.int64)
                self._chars[split, lang] = np.array([3 * n + 1 for n in lens], dtype=np.int32)
        self._pairs = {k: np.array(v, dtype=np.int32).reshape(-1, 2) for k, v in (pairs or {}).items() if v}

    def num_segments(self, split, lang):
        return len(self._off[split, lang]) - 1

    def tokens(self, split, lang):
        return self._tok[split, lang]

    def offsets(self, split, lang):
        return self._off[split, lang]

    def chars(self, split, lang):
        return self._chars[split, lang]

    def segment(self, split, lang, i):
        off = self._off[split, lang]
        return self._tok[split, lang][off[i]:off[i + 1]]

    def pairs(self, split, a, b):
        if (split, a, b) in self._pairs:
            return self._pairs[split, a, b]
        if (split, b, a) in self._pairs:
            return self._pairs[split, b, a][:, ::-1]
        raise XlingError(f"no {a}-{b} translation pairs in the {split} split")


def random_shards(seed: int = 0, n: dict | None = None, pair_n: dict | None = None, max_len: int = 20,
                  min_len: int = 3) -> tuple[FakeShards, dict]:
    """Random unique segments per language (train and valid); pair rows map a's i to a permuted index of b.

    Returns (shards, lookup) with lookup[tuple(tokens)] = (split, lang, index) to identify segments.
    """
    rng = np.random.default_rng(seed)
    n = n or {"en": 40, "fr": 30, "ru": 20}
    pair_n = pair_n if pair_n is not None else {"en-fr": 30, "en-ru": 20, "fr-ru": 10}
    segs, pairs, lookup = {}, {}, {}
    for split in ("train", "valid"):
        segs[split] = {}
        for lang in LANGS:
            out = []
            while len(out) < n[lang]:
                s = rng.integers(FIRST_REAL, V, size=rng.integers(min_len, max_len + 1)).tolist()
                if tuple(s) not in lookup:
                    lookup[tuple(s)] = (split, lang, len(out))
                    out.append(s)
            segs[split][lang] = out
        for p, m in pair_n.items():
            a, b = p.split("-")
            ia, ib = rng.permutation(n[a])[:m].tolist(), rng.permutation(n[b])[:m].tolist()
            rows = list(zip(ia, ib, strict=True))
            pairs[split, a, b] = rows
    return FakeShards(segs, pairs), lookup


def toy_teacher(shards, dim: int = 8, seed: int = 0) -> dict:
    """Teacher vectors for the distill objective: a random unit vector for every English segment of each split."""
    from xling.teacher import TeacherVectors

    rng = np.random.default_rng(seed)
    out = {}
    for split in ("train", "valid"):
        n = shards.num_segments(split, "en")
        v = rng.normal(size=(n, dim)).astype(np.float32)
        out[split] = TeacherVectors(np.arange(n), v / np.linalg.norm(v, axis=1, keepdims=True))
    return out


def tiny_model(n_langs: int = 3, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ModelConfig.preset("tiny", vocab_size=V, n_langs=n_langs))


def real_ids() -> np.ndarray:
    return np.arange(FIRST_REAL, V)


# ---------------------------------------------------------------------------- masking


def test_mask_tokens_statistics():
    rng = np.random.default_rng(0)
    B, T = 256, 128
    ids = rng.integers(FIRST_REAL, V, size=(B, T))
    lengths = rng.integers(T // 2, T + 1, size=B)
    pad = np.arange(T)[None, :] >= lengths[:, None]
    ids[pad] = PAD
    ids[:, 0] = rng.choice(list(TAGS.values()), size=B)  # a language tag first, EOS sprinkled in
    ids[rng.random((B, T)) < 0.05] = EOS
    special = pad | (ids < FIRST_REAL)
    inputs, targets = mask_tokens(ids, special, rng, mask_id=MASK, real_ids=real_ids())
    chosen = targets != IGNORE
    n_eligible = int((~special).sum())
    assert abs(chosen.sum() - 0.15 * n_eligible) <= 1  # exactly 15% of eligible positions (rounded)
    assert not (chosen & special).any()  # never padding, tags or EOS
    assert (targets[chosen] == ids[chosen]).all()  # targets are the original tokens
    assert (inputs[~chosen] == ids[~chosen]).all()  # nothing else changes
    k = chosen.sum()
    masked = chosen & (inputs == MASK)
    replaced = chosen & (inputs != MASK) & (inputs != ids)
    kept = chosen & (inputs == ids)
    sd = math.sqrt(0.1 * 0.9 / k)
    assert masked.sum() / k == pytest.approx(0.8, abs=4 * sd)
    assert replaced.sum() / k == pytest.approx(0.1 * (1 - 1 / len(real_ids())), abs=4 * sd)
    assert kept.sum() / k == pytest.approx(0.1 * (1 + 1 / len(real_ids())), abs=4 * sd)
    assert (inputs[replaced] >= FIRST_REAL).all()  # a random replacement is never a special token
    # no bias by position: first and second half of the real tokens are chosen at the same rate
    first = np.arange(T)[None, :] < lengths[:, None] // 2
    rate1 = chosen[first & ~special].mean()
    rate2 = chosen[~first & ~special].mean()
    assert rate1 == pytest.approx(0.15, abs=0.01) and rate2 == pytest.approx(0.15, abs=0.01)


def test_random_replacements_are_uniform_over_the_real_vocabulary():
    rng = np.random.default_rng(1)
    ids = rng.integers(FIRST_REAL, V, size=(512, 256))
    special = np.zeros(ids.shape, dtype=bool)
    inputs, targets = mask_tokens(ids, special, rng, mask_id=MASK, real_ids=real_ids(), mask_frac=0.0,
                                  random_frac=1.0)
    draws = inputs[targets != IGNORE]
    counts = np.bincount(draws, minlength=V)
    assert counts[:FIRST_REAL].sum() == 0
    expected = len(draws) / len(real_ids())
    chi2 = ((counts[FIRST_REAL:] - expected) ** 2 / expected).sum()
    dof = len(real_ids()) - 1
    assert abs(chi2 - dof) < 5 * math.sqrt(2 * dof)  # chi-square statistic of a uniform draw


def test_frequency_smoothing_follows_the_formula():
    """XLM sample_alpha: weight of token t = max(count_t, 1)^-alpha; rare tokens are chosen more often."""
    rng = np.random.default_rng(2)
    zipf = 1 / np.arange(1, V - FIRST_REAL + 1)
    ids = FIRST_REAL + rng.choice(V - FIRST_REAL, size=(200, 128), p=zipf / zipf.sum())
    counts = np.bincount(ids.reshape(-1), minlength=V)
    alpha = 0.5
    w = smoothing_weights(counts, alpha)
    np.testing.assert_allclose(w, np.maximum(counts, 1) ** -alpha)
    special = np.zeros(ids.shape, dtype=bool)
    hits = np.zeros(V)
    rounds = 20
    for _ in range(rounds):
        _, targets = mask_tokens(ids, special, rng, mask_id=MASK, real_ids=real_ids(), weights=w)
        hits += np.bincount(ids[targets != IGNORE], minlength=V)
    rate = hits / np.maximum(counts * rounds, 1)  # chance that one occurrence of t is chosen
    # weighted choice of k without replacement: occurrence of t is chosen w.p. 1 - exp(-w_t * lam),
    # lam such that the expected total is k (exponential-key sampling, large-n limit)
    k = round(0.15 * ids.size)
    occ_w = w[ids.reshape(-1)]
    lo, hi = 0.0, 1e6
    for _ in range(200):
        lam = (lo + hi) / 2
        lo, hi = (lam, hi) if (1 - np.exp(-occ_w * lam)).sum() < k else (lo, lam)
    predicted = 1 - np.exp(-w * lam)
    often = counts >= 200  # enough occurrences for a precise rate
    assert often.sum() > 10
    np.testing.assert_allclose(rate[often], predicted[often], rtol=0.1)
    frequent, rare = np.argmax(counts), np.flatnonzero(often)[np.argmin(counts[often])]
    assert rate[rare] > 2 * rate[frequent]  # shifted towards rare tokens
    # without smoothing every token is chosen at the same rate
    hits[:] = 0
    for _ in range(rounds):
        _, targets = mask_tokens(ids, special, rng, mask_id=MASK, real_ids=real_ids())
        hits += np.bincount(ids[targets != IGNORE], minlength=V)
    rate = hits / np.maximum(counts * rounds, 1)
    np.testing.assert_allclose(rate[often], 0.15, rtol=0.1)


def test_mlm_smoothing_uses_train_counts():
    shards, _ = random_shards(3)
    obj = MLM(smoothing=0.5)
    obj.make_batch(shards, "valid", np.random.default_rng(0), 4, 32)
    counts = np.zeros(V, dtype=np.int64)
    for lang in LANGS:
        np.add.at(counts, shards.tokens("train", lang).astype(np.int64), 1)
    np.testing.assert_array_equal(token_counts(shards), counts)
    np.testing.assert_allclose(obj._weights, np.maximum(counts, 1) ** -0.5)


# ---------------------------------------------------------------------------- batch layouts


@pytest.mark.parametrize("mixed", [True, False])
def test_clm_batch_is_a_packed_stream_from_a_random_segment(mixed):
    shards, lookup = random_shards(4)
    clm = CLM()
    clm.mixed_langs = mixed
    segs = {lg: [shards.segment("train", lg, i).tolist() for i in range(shards.num_segments("train", lg))]
            for lg in LANGS}
    tag_lang = {TAGS[lg]: lg for lg in LANGS}
    starts, batch_langs = set(), []
    for seed in range(10):
        b = clm.make_batch(shards, "train", np.random.default_rng(seed), 8, 48)
        x, y = b["idx"], b["targets"]
        assert x.shape == y.shape == (8, 48) and b["n_tokens"] == 8 * 48
        assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
        row_langs = [tag_lang[int(t)] for t in x[:, 0]]  # every row starts with a language tag
        batch_langs.append(set(row_langs))
        assert b["lang"] == (row_langs[0] if len(set(row_langs)) == 1 else None)
        for r, lang in enumerate(row_langs):
            assert (b["lang_ids"][r] == LANGS.index(lang)).all()  # the row's own language id at every position
        for lang, row_x, row_y in zip(row_langs, x.tolist(), y.tolist(), strict=True):
            full = row_x + row_y[-1:]  # the 49 tokens of the packed sequence
            start = next(i for i, s in enumerate(segs[lang]) if full[1:1 + len(s)] == s)
            starts.add((lang, start))
            ref = [TAGS[lang]]
            i = start
            while len(ref) < len(full):  # consecutive segments, each followed by </s>, wrapping around
                ref += segs[lang][i] + [EOS]
                i = (i + 1) % len(segs[lang])
            assert full == ref[:len(full)]
    assert len(starts) > 40  # random start segments
    if mixed:  # rows of one batch come from several languages
        assert sum(len(s) > 1 for s in batch_langs) >= 8
    else:  # one language per batch (XLM)
        assert all(len(s) == 1 for s in batch_langs)


def test_mixed_batches_draw_each_rows_language_by_alpha_sampling():
    shards, _ = random_shards(4)
    counts = {lg: shards.num_segments("train", lg) for lg in LANGS}
    clm = CLM(alpha=0.5)
    rng = np.random.default_rng(0)
    n = 0
    seen = dict.fromkeys(LANGS, 0)
    tag_lang = {TAGS[lg]: lg for lg in LANGS}
    for _ in range(200):
        for t in clm.make_batch(shards, "train", rng, 16, 8)["idx"][:, 0].tolist():
            seen[tag_lang[t]] += 1
            n += 1
    q = sampling_probs(counts, 0.5)
    for lg in LANGS:  # within 4 standard deviations of the binomial count
        assert abs(seen[lg] - n * q[lg]) < 4 * np.sqrt(n * q[lg] * (1 - q[lg])) + 1


def tlm_shards():
    segs = {"train": {"en": [[10, 11, 12], [20, 21]], "fr": [[30, 31], [40, 41, 42, 43]], "ru": [[50]]}}
    return FakeShards(segs, {("train", "en", "fr"): [(0, 0), (1, 1)]})


def test_tlm_exact_layout():
    shards = tlm_shards()
    tlm = TLM(length_batching=False, pad_multiple=1)
    expected = {  # sequence, positions, language ids of both directions of both pairs
        (2, 10, 11, 12, 2, 2, 30, 31, 2): ([0, 1, 2, 3, 4, 0, 1, 2, 3], [0] * 5 + [1] * 4),
        (2, 30, 31, 2, 2, 10, 11, 12, 2): ([0, 1, 2, 3, 0, 1, 2, 3, 4], [1] * 4 + [0] * 5),
        (2, 20, 21, 2, 2, 40, 41, 42, 43, 2): ([0, 1, 2, 3, 0, 1, 2, 3, 4, 5], [0] * 4 + [1] * 6),
        (2, 40, 41, 42, 43, 2, 2, 20, 21, 2): ([0, 1, 2, 3, 4, 5, 0, 1, 2, 3], [1] * 6 + [0] * 4),
    }
    seen = set()
    masked_first = masked_second = 0
    rng = np.random.default_rng(0)
    for _ in range(300):
        b = tlm.make_batch(shards, "train", rng, 2, 32, pair="en-fr")
        assert b["pair"] == "en-fr"
        idx, tg, pm = b["idx"], b["targets"], b["pad_mask"]
        chosen = tg != IGNORE
        original = torch.where(chosen, tg, idx)
        assert idx.shape[1] == pm.sum(1).max()  # padded to the longest in the batch
        assert b["n_tokens"] == int(pm.sum())
        for r in range(2):
            n = int(pm[r].sum())
            seq = tuple(original[r, :n].tolist())
            pos, lids = expected[seq]
            seen.add(seq)
            assert b["positions"][r, :n].tolist() == pos  # positions restart at 0 on the second segment
            assert b["lang_ids"][r, :n].tolist() == lids  # language ids switch at the boundary
            assert (idx[r, n:] == PAD).all() and not chosen[r, n:].any()
            c = chosen[r, :n].numpy()
            assert not c[np.array(seq) == EOS].any()  # the 4 EOS are never masked
            boundary = seq.index(EOS, 1) + 1
            masked_first += c[:boundary].sum()
            masked_second += c[boundary:].sum()
    assert seen == set(expected)  # both pairs in both directions
    assert masked_first > 50 and masked_second > 50  # masking in both segments


def test_tlm_truncation_and_padding_multiple():
    assert fit_pair(3, 4, 20) == (3, 4)
    assert fit_pair(2, 30, 10) == (2, 8)  # the longer one is cut
    assert fit_pair(30, 3, 10) == (7, 3)
    assert fit_pair(30, 40, 10) == (5, 5)
    shards, _ = random_shards(5, max_len=40, min_len=20)
    tlm = TLM()
    for seed in range(5):
        b = tlm.make_batch(shards, "train", np.random.default_rng(seed), 4, 40)
        assert b["pad_mask"].sum(1).max() <= 40  # cut to fit seq_len
        assert b["idx"].shape[1] in (16, 32, 40)  # a multiple of 16, capped at seq_len
        b = tlm.make_batch(shards, "train", np.random.default_rng(seed), 4, 64)
        assert b["idx"].shape[1] % 16 == 0


def test_length_batching_reduces_padding():
    shards, _ = random_shards(6, max_len=40, min_len=1)
    pads = {}
    for on in (True, False):
        tlm = TLM(length_batching=on, pad_multiple=1)
        rng = np.random.default_rng(0)
        real = total = 0
        for _ in range(50):
            b = tlm.make_batch(shards, "train", rng, 8, 128)
            real += int(b["pad_mask"].sum())
            total += b["pad_mask"].numel()
        pads[on] = 1 - real / total
    assert pads[True] < 0.5 * pads[False]


def parse_pair(row: list[int]) -> tuple[tuple, tuple]:
    """`<s> a </s> b </s> <pad>...` -> (a, b)."""
    assert row[0] == BOS
    e1 = row.index(EOS)
    e2 = row.index(EOS, e1 + 1)
    return tuple(row[1:e1]), tuple(row[e1 + 1:e2])


def test_nsp_positives_and_negatives():
    shards, lookup = random_shards(7)
    nsp = NSP(d_model=32)
    labels = []
    rng = np.random.default_rng(0)
    for _ in range(60):
        b = nsp.make_batch(shards, "train", rng, 16, 64)
        lang = b["lang"]
        for r in range(16):
            row = b["idx"][r].tolist()
            a, s = parse_pair(row)
            (_, la, ia), (_, lb, ib) = lookup[a], lookup[s]
            assert la == lb == lang
            lab = int(b["labels"][r])
            labels.append(lab)
            assert (ib == ia + 1) == (lab == 1)  # positive = the next segment, negative = never it
            n = int(b["pad_mask"][r].sum())
            assert b["positions"][r, :n].tolist() == list(range(n))
            assert (b["lang_ids"][r, :n] == LANGS.index(lang)).all()
    assert np.mean(labels) == pytest.approx(0.5, abs=0.05)


def test_xnsp_translations_and_random_segments():
    shards, lookup = random_shards(8)
    xnsp = XNSP(d_model=32)
    rng = np.random.default_rng(0)
    labels, directions = [], set()
    for _ in range(60):
        b = xnsp.make_batch(shards, "train", rng, 16, 64)
        a_lang, b_lang = b["pair"].split("-")
        pairs = {tuple(r) for r in shards.pairs("train", a_lang, b_lang).tolist()}
        for r in range(16):
            x, y = parse_pair(b["idx"][r].tolist())
            (_, lx, ix), (_, ly, iy) = lookup[x], lookup[y]
            assert {lx, ly} == {a_lang, b_lang}
            directions.add((lx, ly))
            is_translation = ((ix, iy) if lx == a_lang else (iy, ix)) in pairs
            lab = int(b["labels"][r])
            labels.append(lab)
            assert is_translation == (lab == 1)
            n1, n2 = len(x) + 2, len(y) + 1
            assert b["positions"][r, :n1 + n2].tolist() == list(range(n1)) + list(range(n2))
            assert b["lang_ids"][r, :n1 + n2].tolist() == [LANGS.index(lx)] * n1 + [LANGS.index(ly)] * n2
    assert np.mean(labels) == pytest.approx(0.5, abs=0.05)
    assert len(directions) == 6  # every pair in both directions


def test_contrastive_batch_layout():
    shards, lookup = random_shards(9)
    b = Contrastive().make_batch(shards, "train", np.random.default_rng(0), 8, 64, pair="fr-ru")
    assert b["idx"].shape[0] == 16 and b["pair"] == "fr-ru"
    pairs = {tuple(r) for r in shards.pairs("train", "fr", "ru").tolist()}
    for r in range(8):
        side = []
        for row, lang in ((r, "fr"), (r + 8, "ru")):
            n = int(b["pad_mask"][row].sum())
            toks = b["idx"][row, :n].tolist()
            assert toks[0] == TAGS[lang] and toks[-1] == EOS  # `<lang> x </s>`
            assert (b["lang_ids"][row, :n] == LANGS.index(lang)).all()
            split, lg, i = lookup[tuple(toks[1:-1])]
            assert lg == lang
            side.append(i)
        assert tuple(side) in pairs  # row r of side a and row r of side b are translations


# ---------------------------------------------------------------------------- sampling, reproducibility


def test_language_and_pair_sampling_follow_q():
    shards, _ = random_shards(10, n={"en": 90, "fr": 30, "ru": 10},
                              pair_n={"en-fr": 30, "en-ru": 8, "fr-ru": 2})
    rng = np.random.default_rng(0)
    draws = 2000
    for obj, key, counts in (
        (Contrastive(alpha=0.5, length_batching=False), "pair", {"en-fr": 30, "en-ru": 8, "fr-ru": 2}),
        (CLM(alpha=0.3), "lang", {"en": 90, "fr": 30, "ru": 10}),
    ):
        obj.mixed_langs = False  # one language per batch: the batch's "lang" is the draw (mixed rows: see above)
        got = [obj.make_batch(shards, "train", rng, 2, 8)[key] for _ in range(draws)]
        q = sampling_probs(counts, obj.alpha)
        for name, qi in q.items():
            assert got.count(name) / draws == pytest.approx(qi, abs=4 * math.sqrt(qi * (1 - qi) / draws))


def test_train_pairs_restrict_the_pairs_drawn():
    """train.pairs: the pair objectives draw only those pairs, with q ∝ p^alpha renormalised over them;
    "ru-en" names en-ru and "en-*" every pair of en (a pivot)."""
    shards, _ = random_shards(10, n={"en": 90, "fr": 30, "ru": 10}, pair_n={"en-fr": 30, "en-ru": 8, "fr-ru": 2})
    assert resolve_pairs(["ru-en", "en-fr", "en-ru"], shards) == ["en-ru", "en-fr"]
    assert resolve_pairs(["en-*"], shards) == ["en-fr", "en-ru"] and resolve_pairs(["ru-*"], shards) == ["en-ru",
                                                                                                        "fr-ru"]
    objs = build_objectives({"clm": 1, "mt": 1, "contrastive": 1}, shards, pair_alpha=0.5, pairs=["en-*"])
    assert objs["clm"].pairs is None and objs["mt"].pairs == objs["contrastive"].pairs == ["en-fr", "en-ru"]
    rng, draws = np.random.default_rng(0), 2000
    got = [objs["mt"].make_batch(shards, "train", rng, 2, 16)["pair"] for _ in range(draws)]
    q = sampling_probs({"en-fr": 30, "en-ru": 8}, 0.5)
    assert set(got) == set(q)  # fr-ru never
    for name, qi in q.items():
        assert got.count(name) / draws == pytest.approx(qi, abs=4 * math.sqrt(qi * (1 - qi) / draws))
    assert objs["mt"].make_batch(shards, "valid", rng, 2, 16, pair="fr-ru")["pair"] == "fr-ru"  # asked: given
    for bad, msg in ((["en-de"], r"'en-de' is not two of the shards' languages \(en, fr, ru\)"),
                     (["de-*"], "'de-\\*' is not two"), (["en-en"], "'en-en' is not two")):
        with pytest.raises(XlingError, match=msg):
            build_objectives({"mt": 1}, shards, pairs=bad)
    no_fr_ru, _ = random_shards(10, pair_n={"en-fr": 30, "en-ru": 8})
    with pytest.raises(XlingError, match="train.pairs: fr-ru has no training translation pairs"):
        build_objectives({"contrastive": 1}, no_fr_ru, pairs=["fr-*"])


def test_mt_exact_layout():
    """`<x_lang> x </s> <y_lang> y </s>`: inputs drop the final </s>, loss only where y and </s> are predicted."""
    I = IGNORE
    expected = {  # input ids: (targets, language ids) for both directions of both pairs
        (5, 10, 11, 12, 2, 6, 30, 31): ([I] * 5 + [30, 31, 2], [0] * 5 + [1] * 3),
        (6, 30, 31, 2, 5, 10, 11, 12): ([I] * 4 + [10, 11, 12, 2], [1] * 4 + [0] * 4),
        (5, 20, 21, 2, 6, 40, 41, 42, 43): ([I] * 4 + [40, 41, 42, 43, 2], [0] * 4 + [1] * 5),
        (6, 40, 41, 42, 43, 2, 5, 20, 21): ([I] * 6 + [20, 21, 2], [1] * 6 + [0] * 3),
    }
    mt, rng, seen = MT(length_batching=False, pad_multiple=1), np.random.default_rng(0), set()
    for _ in range(100):
        b = mt.make_batch(tlm_shards(), "train", rng, 2, 32, pair="en-fr")
        assert "pad_mask" not in b and "positions" not in b  # right padding, causal: positions 0..T-1
        for r in range(2):
            n = int((b["idx"][r] != PAD).sum())
            key = tuple(b["idx"][r, :n].tolist())
            targets, lids = expected[key]
            seen.add(key)
            assert b["targets"][r, :n].tolist() == targets
            assert b["lang_ids"][r, :n].tolist() == lids
            assert (b["targets"][r, n:] == IGNORE).all()
        assert b["n_tokens"] == int((b["idx"] != PAD).sum())
    assert seen == set(expected)


def test_target_span_gathers_each_rows_targets_in_order():
    """Row by row, the gathered ids are the row's non-IGNORE targets in order, then IGNORE; their positions
    are where they sit. Runs of every place: mid-row, up to the last column, none at all, the whole row."""

    rng = np.random.default_rng(0)
    T = 12
    runs = [(3, 4), (7, 5), (0, 0), (0, 12), (11, 1)] + [tuple(rng.integers(0, 6, 2)) for _ in range(20)]
    targets = torch.full((len(runs), T), IGNORE)
    for r, (start, n) in enumerate(runs):
        targets[r, start:start + n] = torch.from_numpy(rng.integers(0, 50, n))
    span = target_span(targets, multiple=8)
    pos, ids = span["target_pos"], span["target_ids"]
    assert pos.shape == ids.shape == (len(runs), 12)  # the longest run (12) rounded up to 8 is 16, capped at T
    assert ((0 <= pos) & (pos < T)).all()
    for r in range(len(runs)):
        want = targets[r][targets[r] != IGNORE]
        assert torch.equal(ids[r, :len(want)], want) and (ids[r, len(want):] == IGNORE).all()
        assert torch.equal(targets[r, pos[r, :len(want)]], want)
    assert target_span(targets[:3], multiple=8)["target_pos"].shape == (3, 8)  # longest 5 -> 8


def test_mt_is_the_translation_fine_tune_format():
    """Row for row, an `mt` batch is what tasks/translate.make_batch builds for the same pair, so its loss
    is translate.mt_loss: pretraining on it trains exactly what the fine-tune and the decoder use."""
    from xling.tasks.translate.data import Example, make_batch
    from xling.tasks.translate.loss import mt_loss

    shards, _ = random_shards(21)
    batch = MT(pad_multiple=1).make_batch(shards, "train", np.random.default_rng(3), 6, 64)
    lang_of = {t: lg for lg, t in shards.lang_token_ids.items()}
    rows = []
    for r in range(6):
        ids = [t for t in batch["idx"][r].tolist() if t != PAD]
        cut = ids.index(EOS)
        a, b = lang_of[ids[0]], lang_of[ids[cut + 1]]  # indices as corpus_examples takes them
        rows.append(Example(np.array(ids[1:cut]), np.array(ids[cut + 2:]), ids[0], ids[cut + 1],
                            shards.langs.index(a), shards.langs.index(b)))
    ref = make_batch(rows, pad_multiple=1)
    real = batch["idx"] != PAD
    for k in ("idx", "targets"):
        assert torch.equal(ref[k], batch[k]), k
    assert torch.equal(ref["lang_ids"][real], batch["lang_ids"][real])  # padding's ids are never used
    model = tiny_model().eval()
    loss, _ = MT()(model, batch)
    assert loss.item() == pytest.approx(mt_loss(model, ref).item(), rel=1e-5)


def batches_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_same_seed_same_batches(name):
    shards, _ = random_shards(11)
    obj = build_objectives({name: 1.0}, shards, d_model=32, mlm_smoothing=0.5, teacher=toy_teacher(shards))[name]

    def run(seed):
        rng = np.random.default_rng(seed)
        return [obj.make_batch(shards, "train", rng, 4, 32) for _ in range(3)]

    first, again, other = run(5), run(5), run(6)
    assert all(batches_equal(x, y) for x, y in zip(first, again, strict=True))
    assert not all(batches_equal(x, y) for x, y in zip(first, other, strict=True))
    # resuming from a saved generator state continues the same data order
    rng = np.random.default_rng(5)
    obj.make_batch(shards, "train", rng, 4, 32)
    state = rng.bit_generator.state
    rng2 = np.random.default_rng(0)
    rng2.bit_generator.state = state
    assert batches_equal(obj.make_batch(shards, "train", rng2, 4, 32), first[1])


# ---------------------------------------------------------------------------- building


def test_build_objectives_checks():
    shards, _ = random_shards(12)
    objs = build_objectives({"clm": 1.0, "mlm": 0.0, "tlm": 0.5, "nsp": 1, "xnsp": 1, "contrastive": 2},
                            shards, d_model=32, tau=0.1, margin=0.2)
    assert set(objs) == {"clm", "tlm", "nsp", "xnsp", "contrastive"}  # weight 0 = off
    assert isinstance(objs["tlm"], TLM)
    assert objs["contrastive"].tau == 0.1 and objs["contrastive"].margin == 0.2
    assert objs["nsp"].head.in_features == 32
    with pytest.raises(XlingError, match="unknown objective.*'mln'.*clm, mlm, tlm, mt, nsp, xnsp, contrastive"):
        build_objectives({"mln": 1.0}, shards)
    mono, _ = random_shards(13, pair_n={})
    assert set(build_objectives({"clm": 1, "mlm": 1, "nsp": 1}, mono, d_model=32)) == {"clm", "mlm", "nsp"}
    for name in ("tlm", "xnsp", "contrastive"):
        msg = f"objective {name} needs translation pairs but the corpus has none"
        with pytest.raises(XlingError, match=msg):
            build_objectives({"clm": 1.0, name: 1.0}, mono, d_model=32)
    with pytest.raises(XlingError, match="positive weight"):
        build_objectives({"clm": 0.0}, shards)
    with pytest.raises(XlingError, match="no valid translation pairs|valid split has no translation pairs"):
        one_pair = FakeShards({"train": {"en": [[9]], "fr": [[10]]}}, {("train", "en", "fr"): [(0, 0)]})
        TLM().make_batch(one_pair, "valid", np.random.default_rng(0), 2, 16)


def test_pair_names_with_hyphenated_codes():
    segs = {"train": {"en": [[10, 11], [12]], "pt-BR": [[20], [21, 22]]}}
    shards = FakeShards(segs, {("train", "en", "pt-BR"): [(0, 1), (1, 0)]}, langs=["en", "pt-BR"])
    obj = Contrastive(length_batching=False)
    for pair, first in ((None, "en"), ("en-pt-BR", "en"), ("pt-BR-en", "pt-BR")):
        b = obj.make_batch(shards, "train", np.random.default_rng(0), 2, 16, pair=pair)
        assert b["pair"] == (pair or "en-pt-BR")
        assert b["idx"][:2, 0].tolist() == [shards.lang_token_ids[first]] * 2  # side a's language tags
    with pytest.raises(XlingError, match="no train translation pairs for en-xx"):
        obj.make_batch(shards, "train", np.random.default_rng(0), 2, 16, pair="en-xx")


# ---------------------------------------------------------------------------- losses


def test_info_nce_matches_numpy():
    g = torch.Generator().manual_seed(0)
    za, zb = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    zb[2] = za[2] * 3  # one pair scaled only: cosine 1
    for tau, margin in ((0.05, 0.0), (0.1, 0.3)):
        a = za.numpy() / np.linalg.norm(za.numpy(), axis=1, keepdims=True)
        b = zb.numpy() / np.linalg.norm(zb.numpy(), axis=1, keepdims=True)
        logits = (a @ b.T - margin * np.eye(6)) / tau

        def xent(lg):
            lg = lg - lg.max(1, keepdims=True)
            return -(np.diag(lg) - np.log(np.exp(lg).sum(1))).mean()

        ref = (xent(logits) + xent(logits.T)) / 2
        s = a @ b.T
        acc = ((s.argmax(1) == np.arange(6)).mean() + (s.argmax(0) == np.arange(6)).mean()) / 2
        loss, got_acc = info_nce(za, zb, tau, margin)
        assert loss.item() == pytest.approx(ref, rel=1e-5)
        assert got_acc.item() == pytest.approx(acc)
    # symmetric: swapping the sides gives the same loss
    assert info_nce(zb, za)[0].item() == pytest.approx(info_nce(za, zb)[0].item(), rel=1e-6)


def test_mean_pool_skips_padding():
    h = torch.randn(2, 5, 4)
    m = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    got = mean_pool(h, m)
    torch.testing.assert_close(got[0], h[0, :3].mean(0))
    torch.testing.assert_close(got[1], h[1].mean(0))


def test_forward_losses_with_the_real_model():
    shards, _ = random_shards(14)
    model = tiny_model()
    objs = build_objectives({k: 1.0 for k in OBJECTIVES}, shards, d_model=model.cfg.d_model,
                            teacher=toy_teacher(shards))
    rng = np.random.default_rng(0)
    for name, obj in objs.items():
        batch = obj.make_batch(shards, "train", rng, 8, 32)
        model.zero_grad()
        obj.zero_grad()
        loss, stats = obj(model, batch)
        assert torch.isfinite(loss) and stats["loss"] == pytest.approx(loss.item())
        assert stats["n_tokens"] == batch["n_tokens"] > 0
        loss.backward()
        assert model.wte.weight.grad.abs().sum() > 0
        if name in ("clm", "mlm", "tlm", "mt"):  # at init the LM is close to uniform over the vocabulary
            assert loss.item() == pytest.approx(math.log(V), abs=0.15)
        if name in ("mlm", "tlm"):
            assert stats["n_masked"] == int((batch["targets"] != IGNORE).sum()) > 0
            assert 0 <= stats["acc"] <= 1
        if name in ("nsp", "xnsp"):
            assert loss.item() == pytest.approx(math.log(2), abs=0.1)
            assert obj.head.weight.grad.abs().sum() > 0  # the head lives in the objective
            assert 0 <= stats["acc"] <= 1
        if name == "contrastive":
            assert 0 <= stats["acc"] <= 1
        if name == "distill":  # ||u - t||^2 = 2 - 2 cos per side: about 4 at init
            assert loss.item() == pytest.approx(4 - 2 * (stats["cos_en"] + stats["cos_x"]), abs=1e-4)
            assert obj.proj.weight.grad.abs().sum() > 0  # the projection lives in the objective


def test_contrastive_forward_equals_separate_encoding():
    """One 2B batch (common padding) gives the same loss as encoding each side with its own padding."""
    shards, _ = random_shards(15)
    model = tiny_model().eval()
    obj = Contrastive(tau=0.05, margin=0.1)
    batch = obj.make_batch(shards, "train", np.random.default_rng(0), 6, 32)
    loss, _ = obj(model, batch)
    pooled = []
    for rows in (slice(0, 6), slice(6, 12)):
        pm = batch["pad_mask"][rows]
        T = int(pm.sum(1).max())  # this side's own padded length
        h = model(batch["idx"][rows, :T], causal=False, lang_ids=batch["lang_ids"][rows, :T],
                  pad_mask=pm[:, :T])
        pooled.append(mean_pool(h, pm[:, :T]))
    ref, _ = info_nce(*pooled, tau=0.05, margin=0.1)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-4)


def test_clm_eval_counts_every_target_and_char():
    shards, _ = random_shards(16)
    model = tiny_model()
    with torch.no_grad():
        model.wte.weight.zero_()  # logits all 0: every target costs exactly ln V nats
    lens = np.diff(shards.offsets("valid", "fr"))
    for seq_len, max_tokens, n_used in ((64, 0, len(lens)), (8, 0, len(lens)), (64, 50, None)):
        if n_used is None:  # segments in order until 50 targets (segment + </s>) are reached
            n_used = int(np.searchsorted(np.cumsum(lens + 1), 50) + 1)
        nats, chars = clm_eval(model, shards, "valid", "fr", seq_len, max_tokens)
        assert nats == pytest.approx(math.log(V) * (lens[:n_used] + 1).sum(), rel=1e-5)  # tag is context only
        assert chars == shards.chars("valid", "fr")[:n_used].sum()
    assert model.training  # mode restored


def test_clm_eval_matches_a_direct_computation():
    shards, _ = random_shards(17)
    model = tiny_model()
    nats, chars = clm_eval(model, shards, "valid", "ru", 64, 0, batch_size=4)
    ref = 0.0
    with torch.no_grad():
        model.eval()
        for i in range(shards.num_segments("valid", "ru")):
            seq = torch.tensor([[TAGS["ru"], *shards.segment("valid", "ru", i).tolist(), EOS]])
            logits = model.lm_head(model(seq[:, :-1], lang_ids=torch.full_like(seq[:, :-1], 2)))
            ref += torch.nn.functional.cross_entropy(logits[0], seq[0, 1:], reduction="sum").item()
    assert nats == pytest.approx(ref, rel=1e-4)
    assert chars == shards.chars("valid", "ru").sum()


# ---------------------------------------------------------------------------- real shards


def test_objectives_on_real_shards(tmp_path, fake_source):
    from xling.corpus import Corpus, CorpusConfig, build_corpus
    from xling.shards import ShardConfig, Shards, build_shards
    from xling.tokenizer import TokenizerConfig, train_tokenizer

    from .conftest import tiny_segments

    fake_source(tiny_segments(20))
    cfg = CorpusConfig(source="text", langs=["en", "fr", "ru"], valid_fraction=0.1, test_fraction=0.1)
    build_corpus(cfg, tmp_path / "corpus")
    corpus = Corpus(tmp_path / "corpus")
    train_tokenizer(corpus, TokenizerConfig(vocab_size=300), tmp_path / "tokenizer", alpha=0.3)
    build_shards(corpus, tmp_path / "tokenizer", ShardConfig(), tmp_path / "shards")
    shards = Shards(tmp_path / "shards")
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=shards.vocab_size, n_langs=len(shards.langs)))
    objs = build_objectives({k: 1.0 for k in OBJECTIVES}, shards, d_model=32, mlm_smoothing=0.5,
                            teacher=toy_teacher(shards))
    rng = np.random.default_rng(0)
    for name, obj in objs.items():
        batch = obj.make_batch(shards, "train", rng, 4, 48)
        loss, stats = obj(model, batch)
        assert torch.isfinite(loss), name
        if name == "clm":  # every row starts with its language's tag, and its language ids say the same language
            tags = {int(shards.lang_token_ids[lg]): i for i, lg in enumerate(shards.langs)}
            assert [tags[int(t)] for t in batch["idx"][:, 0]] == batch["lang_ids"][:, 0].tolist()
    nats, chars = clm_eval(model, shards, "valid", "ru", 48, 0)
    bpc = nats / math.log(2) / chars
    assert chars == int(np.asarray(shards.chars("valid", "ru")).sum()) > 0
    assert 0.5 < bpc < 20  # an untrained model: about log2(V) bits per token, a few chars per token
