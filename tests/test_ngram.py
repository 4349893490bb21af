"""Count-based baselines (xling.ngram): hand-computed Kneser-Ney and unigram probabilities, normalisation,
the same text as `clm_eval`, and the baseline columns of the bits-per-character evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from xling.heldout import clm_eval
from xling.ngram import (
    DEFAULT_ORDER,
    FALLBACK_DISCOUNTS,
    KneserNey,
    Unigram,
    baseline_bpc,
    fit_kneser_ney,
    fit_unigram,
    modified_kn_discounts,
)

from .test_objectives import EOS, LANGS, FakeShards, V, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)

# The toy corpus: vocabulary of 10 ids, </s> = 2, the tag <en> = T = 5, words a b c d = 6 7 8 9 (ids 0, 1, 3, 4
# are never seen). Order 3: each segment is counted as `T T seg </s>`.
T, A, B, C, D = 5, 6, 7, 8, 9
TOY = [[A, B, C], [A, B, D], [B, C], [A, B, C]]
TOY_V = 10


def _flat(segs):
    return np.array([t for s in segs for t in s], dtype=np.uint16), np.cumsum([0] + [len(s) for s in segs])


def _toy_kn(**kw) -> KneserNey:
    tokens, offsets = _flat(TOY)
    return KneserNey.fit(tokens, offsets, order=3, vocab_size=TOY_V, tag=T, eos=EOS, **kw)


# Hand computation with fixed discounts D1 = 0.5, D2 = 0.8, D3+ = 1.1 at every order (E = </s>).
# Predicted trigrams (raw counts, order 3):  TTa 3, Tab 3, abc 2, bcE 3, abd 1, bdE 1, TTb 1, Tbc 1   (sum 15)
# Continuation counts, order 2 (distinct trigram types ending in the bigram):
#     Ta 1 (TTa), ab 1 (Tab), bc 2 (abc, Tbc), cE 1, bd 1, dE 1, Tb 1 (TTb); TT 0 (never predicted)
# Continuation counts, order 1 (distinct predicted bigram types ending in the word):
#     a 1 (Ta), b 2 (ab, Tb), c 1 (bc), d 1 (bd), E 2 (cE, dE)                                  S_1 = 7
# Order 1: gamma_1 = (0.5 * 3 [a c d] + 0.8 * 2 [b E]) / 7 = 3.1/7; P_0 = 1/10
#     P1(a) = P1(c) = P1(d) = (1 - 0.5)/7 + 3.1/70 = 8.1/70          P1(b) = P1(E) = (2 - 0.8)/7 + 3.1/70 = 15.1/70
#     P1(unseen id) = 3.1/70
# Order 2 contexts: b: bc 2, bd 1 -> S 3, gamma (0.8 + 0.5)/3 = 13/30;  T: Ta 1, Tb 1 -> S 2, gamma 1.0/2;
#                   c: cE 1 -> S 1, gamma 0.5
# Order 3 contexts: ab: abc 2, abd 1 -> S 3, gamma 13/30;  TT: TTa 3, TTb 1 -> S 4, gamma (1.1 + 0.5)/4 = 0.4;
#                   Tb: Tbc 1 -> S 1, gamma 0.5;  bc: bcE 3 -> S 3, gamma 1.1/3
P1_A = P1_C = P1_D = 8.1 / 70
P1_B = P1_E = 15.1 / 70
P1_UNSEEN = 3.1 / 70
P2_C_B = (2 - 0.8) / 3 + 13 / 30 * P1_C  # 0.45014...
P2_D_B = (1 - 0.5) / 3 + 13 / 30 * P1_D  # 0.21681...
P2_A_T = (1 - 0.5) / 2 + 0.5 * P1_A  # 0.30786...
P2_E_C = (1 - 0.5) / 1 + 0.5 * P1_E  # 0.60786...
HAND = {  # (context after the tag, word) -> P
    ((A, B), C): (2 - 0.8) / 3 + 13 / 30 * P2_C_B,  # seen trigram abc: 0.59506...
    ((B,), D): 0 + 0.5 * P2_D_B,  # unseen trigram T b d, seen context Tb and bigram bd: 0.10840...
    ((3,), B): P1_B,  # unseen word as context: no trigram or bigram context, the unigram level: 0.21571...
    ((A, B), 3): 13 / 30 * 13 / 30 * P1_UNSEEN,  # an id never seen: only the discounted mass reaches it
    ((), A): (3 - 1.1) / 4 + 0.4 * P2_A_T,  # the first word of a segment, context `T T`: 0.59814...
    ((A, B, C), EOS): (3 - 1.1) / 3 + 1.1 / 3 * P2_E_C,  # </s> is predicted: 0.85621...
}


@pytest.mark.parametrize("context, word", list(HAND))
def test_kneser_ney_matches_hand_computation(context, word):
    model = _toy_kn(discounts=[(0.5, 0.8, 1.1)] * 3)
    assert math.exp(model.logprob(list(context), word)) == pytest.approx(HAND[context, word], rel=1e-12)


def test_kneser_ney_counts_and_estimated_discounts():
    model = _toy_kn()
    assert sorted(model.counts[3].tolist()) == [1, 1, 1, 1, 2, 3, 3, 3]  # raw counts above
    assert model.counts[1].tolist() == [0, 0, 2, 0, 0, 0, 1, 2, 1, 1]  # continuation counts of ids 0..9
    # order 3 count-of-counts n1 = 4, n2 = 1, n3 = 3, n4 = 0: Y = 4/(4 + 2) = 2/3,
    # D1 = 1 - 2Y n2/n1 = 2/3; D2 = 2 - 3Y n3/n2 = -4 (outside (0, 2]: the fallback 1.0); D3+ = 3 - 4Y*0/3 = 3
    assert model.discounts[3] == pytest.approx([0, 2 / 3, 1.0, 3.0])


def test_modified_kn_discounts():
    counts = np.repeat([1, 2, 3, 4, 9], [10, 5, 3, 2, 7])  # n1 = 10, n2 = 5, n3 = 3, n4 = 2: Y = 10/20 = 0.5
    assert modified_kn_discounts(counts) == pytest.approx([0, 1 - 2 * 0.5 * 5 / 10, 2 - 3 * 0.5 * 3 / 5,
                                                           3 - 4 * 0.5 * 2 / 3])  # 0.5, 1.1, 1.667
    assert modified_kn_discounts(np.array([5, 7])) == pytest.approx([0, *FALLBACK_DISCOUNTS])  # n1 = n2 = 0


def test_unigram_matches_hand_computation():
    tokens, offsets = _flat(TOY)
    uni = Unigram.fit(tokens, offsets, vocab_size=TOY_V, tag=T, eos=EOS)
    # predicted: a 3, b 4, c 3, d 1, </s> 4 = 15 tokens; P(w) = (c + 0.5) / (15 + 10 * 0.5)
    assert math.exp(uni.logprob([A, B], A)) == pytest.approx(3.5 / 20)
    assert math.exp(uni.logprob([], EOS)) == pytest.approx(4.5 / 20)
    assert math.exp(uni.logprob([C], 3)) == pytest.approx(0.5 / 20)
    assert uni.distribution([]).sum() == pytest.approx(1.0, abs=1e-12)


def _markov_segments(rng, n: int, vocab: int = 60, first: int = 8) -> list[list[int]]:
    """Segments from a fixed sparse second-order source: each (previous two words) has 3 likely next words."""
    table = np.random.default_rng(123).integers(first, vocab, size=(vocab, vocab, 3))
    out = []
    for _ in range(n):
        seg = [int(x) for x in rng.integers(first, vocab, size=2)]
        for _ in range(rng.integers(3, 15)):
            seg.append(int(table[seg[-2], seg[-1], rng.integers(3)]) if rng.random() < 0.9
                       else int(rng.integers(first, vocab)))
        out.append(seg)
    return out


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_distributions_sum_to_one(order):
    rng = np.random.default_rng(order)
    tokens, offsets = _flat(_markov_segments(rng, 300))
    model = KneserNey.fit(tokens, offsets, order=order, vocab_size=70, tag=T, eos=EOS)  # ids 60..69 never seen
    seen = tokens[offsets[3]:offsets[3] + 4].tolist()
    for context in ([], seen[:1], seen[:2], seen, [65, 66, 67], [3, *seen[:2]], [T, T, T, T]):
        p = model.distribution(context)
        assert p.dtype == np.float64 and p.min() > 0
        assert abs(p.sum() - 1.0) < 1e-9, (order, context)
    p = _toy_kn().distribution([A, B])  # estimated discounts with a fallback and D3+ = 3
    assert abs(p.sum() - 1.0) < 1e-9 and p.min() > 0


def test_kneser_ney_beats_unigram_on_held_out_text():
    rng = np.random.default_rng(0)
    train, held = _flat(_markov_segments(rng, 2000)), _flat(_markov_segments(rng, 200))
    uni_nats = Unigram.fit(*train, vocab_size=64, tag=T, eos=EOS).nll(*held)
    kn2, kn3 = (KneserNey.fit(*train, order=n, vocab_size=64, tag=T, eos=EOS).nll(*held) for n in (2, 3))
    n_pred = len(held[0]) + len(held[1]) - 1  # each token and one </s> per segment
    assert uni_nats / n_pred > math.log(40)  # words of the source are near uniform over 52 ids: ~ln 52
    # the source picks a word from the two before it, so a trigram model learns it and a bigram model barely
    # does (measured: 0.71 and 0.99 of the unigram's nats; 18k training tokens for 2,704 word pairs)
    assert kn3 < 0.8 * uni_nats and kn3 < 0.8 * kn2


def _toy_shards() -> FakeShards:
    rng = np.random.default_rng(7)
    segs = {split: {lg: _markov_segments(rng, n) for lg in LANGS}
            for split, n in (("train", 400), ("valid", 20), ("test", 30))}
    return FakeShards(segs, vocab_size=V)


def test_baseline_scores_the_segments_and_characters_clm_eval_scores():
    shards = _toy_shards()
    model = tiny_model()
    with torch.no_grad():
        model.wte.weight.zero_()  # logits all 0: clm_eval's nats = ln V * (targets it scored)
    uni, kn = fit_unigram(shards, "fr"), fit_kneser_ney(shards, "fr", order=3)
    lens = np.diff(shards.offsets("test", "fr"))
    for max_tokens in (0, 1, 50, 137, 10**6):
        nats, chars = clm_eval(model, shards, "test", "fr", seq_len=8, max_tokens=max_tokens)
        targets = round(nats / math.log(V))
        n_used = int(np.flatnonzero(np.cumsum(lens + 1) == targets)[0]) + 1  # the segments clm_eval scored
        for baseline in (uni, kn):
            b_nats, b_chars = baseline.eval_nll(shards, "test", "fr", max_tokens)
            assert b_chars == chars
            ref = 0.0  # the same segments, one prediction at a time through the public logprob
            for i in range(n_used):
                seg = shards.segment("test", "fr", i).tolist() + [EOS]
                ref -= sum(baseline.logprob(seg[:j], seg[j]) for j in range(len(seg)))
            assert b_nats == pytest.approx(ref, rel=1e-12)
        bpc = baseline_bpc(shards, "test", "fr", max_tokens, order=3)
        assert bpc["ngram"] == pytest.approx(kn.eval_nll(shards, "test", "fr", max_tokens)[0] / math.log(2) / chars)
        assert bpc["ngram"] < bpc["unigram"]


def test_eval_bpc_section_has_the_baselines(tmp_path):
    from xling.evaluate import EvalContext, eval_bpc
    from xling.files import atomic_write_json
    from xling.report import write_report

    shards = _toy_shards()
    ctx = EvalContext(run_dir=tmp_path, model=tiny_model(), shards=shards, tokenizer=None, corpus=None, step=3,
                      bpc_tokens=60)
    result = eval_bpc(ctx)
    m = result["metrics"]
    for lg in LANGS:
        base = baseline_bpc(shards, "test", lg, max_tokens=60, order=DEFAULT_ORDER)
        assert m[f"bpc_baseline.ngram.{lg}"] == pytest.approx(base["ngram"])
        assert m[f"bpc_baseline.unigram.{lg}"] == pytest.approx(base["unigram"])
        assert m[f"bpc_baseline.ngram.{lg}"] < m[f"bpc_baseline.unigram.{lg}"] < m[f"bpc.{lg}"]  # untrained model
    assert m["bpc.ratio_unigram_max"] == pytest.approx(max(m[f"bpc.{lg}"] / m[f"bpc_baseline.unigram.{lg}"]
                                                           for lg in LANGS))
    assert m["bpc.below_ngram"] == 0
    blocks = result["sections"][0]["blocks"]
    table = next(b for b in blocks if b["kind"] == "table")
    assert table["header"] == ["lang", "model", f"n-gram (order {DEFAULT_ORDER}, KN)", "unigram",
                               "model / unigram", "model / n-gram"]
    en = table["rows"][0]
    assert en[0] == "en" and en[4] == pytest.approx(en[1] / en[3]) and en[5] == pytest.approx(en[1] / en[2])
    bars = next(b for b in blocks if b["kind"] == "bars")
    assert bars["labels"] == LANGS and list(bars["series"]) == ["model", f"{DEFAULT_ORDER}-gram KN", "unigram"]
    # rendered: the table in Markdown and the grouped bars as a PNG
    atomic_write_json(tmp_path / "eval" / "bpc.json", {"name": "bpc", "order": 30, **result})
    out = write_report(tmp_path)
    md = (out / "report.md").read_text()
    assert "| model / n-gram |" in md and "same language's train split" in md and "![" in md
    assert (out / "01_bpc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "metrics.json").read_text())["bpc.below_ngram"] == 0
