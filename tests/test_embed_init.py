"""Cross-language LSI initialisation (xling/embed_init.py): translations start as nearest neighbours."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_objectives import FakeShards
from xling.embed_init import INIT_STD, _concept_columns, aligned_lsi, init_embeddings
from xling.errors import XlingError
from xling.model import ModelConfig, Transformer

pytestmark = pytest.mark.usefixtures("one_thread")

N_WORDS = 40  # concepts; en words 8..47, fr 48..87, ru 88..127 (word i of each language = concept i)
V = 8 + 3 * N_WORDS + 8  # 8 ids at the end never occur
OFFSET = {"en": 8, "fr": 8 + N_WORDS, "ru": 8 + 2 * N_WORDS}


def dictionary_shards(n_segments: int = 300, seed: int = 0) -> FakeShards:
    """Each segment is a random bag of concepts written in each language's words; fr and ru segments are
    stored in a shuffled order, so only the pair rows say which segment translates which."""
    rng = np.random.default_rng(seed)
    bags = [rng.choice(N_WORDS, size=rng.integers(3, 8), replace=False) for _ in range(n_segments)]
    segs, pairs = {"train": {}}, {}
    segs["train"]["en"] = [(b + OFFSET["en"]).tolist() for b in bags]
    for lang in ("fr", "ru"):
        order = rng.permutation(n_segments)  # fr/ru segment j holds en segment order[j]
        segs["train"][lang] = [(bags[i] + OFFSET[lang])[rng.permutation(len(bags[i]))].tolist() for i in order]
        pairs["train", "en", lang] = [(int(i), j) for j, i in enumerate(order)]
    return FakeShards(segs, pairs, langs=["en", "fr", "ru"], vocab_size=V)


def test_concept_columns_match_a_plain_loop():
    shards = dictionary_shards(50)
    toks, cols, used = _concept_columns(shards, "train", "en", ["en", "fr", "ru"])
    expect = [(t, i) for i in range(50) for t in shards.segment("train", "en", i)]
    for lang in ("fr", "ru"):
        expect += [(t, int(i)) for i, j in shards.pairs("train", "en", lang) for t in shards.segment("train", lang, j)]
    assert used == ["en", "fr", "ru"]
    assert list(zip(toks.tolist(), cols.tolist(), strict=True)) == [(int(t), c) for t, c in expect]


def test_translations_are_nearest_neighbours():
    vecs, stats = aligned_lsi(dictionary_shards(), V, 16, pivot="en")
    assert stats["tokens_covered"] == 3 * N_WORDS and stats["concepts"] == 300
    unit = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    en = unit[OFFSET["en"]:OFFSET["en"] + N_WORDS]
    for lang in ("fr", "ru"):
        other = unit[OFFSET[lang]:OFFSET[lang] + N_WORDS]
        hits = (en @ other.T).argmax(1) == np.arange(N_WORDS)
        assert hits.mean() >= 0.95, (lang, hits.mean())
    assert not vecs[:8].any() and not vecs[-8:].any()  # never-seen ids get no vector


def test_init_embeddings_scales_seen_rows_and_keeps_the_rest():
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=V))
    before = model.wte.weight.detach().clone()
    init_embeddings(model, dictionary_shards(), ["en", "fr", "ru"], pivot="en")
    after = model.wte.weight.detach()
    seen = slice(8, 8 + 3 * N_WORDS)
    torch.testing.assert_close(after[:8], before[:8], rtol=0, atol=0)
    torch.testing.assert_close(after[-8:], before[-8:], rtol=0, atol=0)
    assert abs(after[seen].std().item() - INIT_STD) < 0.1 * INIT_STD
    again = Transformer(ModelConfig.preset("tiny", vocab_size=V))
    init_embeddings(again, dictionary_shards(), ["en", "fr", "ru"], pivot="en")
    torch.testing.assert_close(again.wte.weight[seen], after[seen], rtol=0, atol=0)  # seeded: repeats exactly


def test_needs_translation_pairs():
    shards = FakeShards({"train": {"en": [[8, 9, 10]] * 5, "fr": [[50, 51]] * 5}}, {}, langs=["en", "fr"],
                        vocab_size=V)
    with pytest.raises(XlingError, match="embed_init = 'normal'"):
        aligned_lsi(shards, V, 4, pivot="en")
