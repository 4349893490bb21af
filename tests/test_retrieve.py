"""Retrieval: chunked exact search equals brute force; sentence vectors do not depend on batch padding."""

import numpy as np
import torch

from xling.model import ModelConfig, Transformer
from xling.tasks.retrieve import encode, nearest, top1_accuracy

SPECIALS = {"pad": 0, "bos": 1, "eos": 2, "unk": 3, "mask": 4}


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_nearest_matches_brute_force_in_chunks():
    rng = np.random.default_rng(0)
    q, docs = _unit(rng, 130, 16), _unit(rng, 400, 16)
    scores, idx = nearest(q, docs, k=5, chunk=32)  # 5 chunks, the last one partial
    sim = q @ docs.T
    ref = np.argsort(-sim, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_allclose(scores, np.take_along_axis(sim, ref, 1), rtol=1e-6)


def test_top1_accuracy_counts_gold_rows():
    rng = np.random.default_rng(1)
    a = _unit(rng, 50, 8)
    assert top1_accuracy(a, a) == 1.0
    b = a.copy()
    b[[0, 1]] = b[[1, 0]]  # two rows swapped: those two queries now find the wrong row
    assert top1_accuracy(a, b) == 48 / 50


def test_encode_is_independent_of_batch_padding_and_order():
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=50, n_langs=2))
    rng = np.random.default_rng(2)
    seqs = [rng.integers(8, 50, size=n) for n in (3, 11, 7, 20, 1)]
    together = encode(model, seqs, lang_index=1, tag=6, specials=SPECIALS, batch_size=8)
    alone = np.concatenate([encode(model, [s], lang_index=1, tag=6, specials=SPECIALS) for s in seqs])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, rtol=1e-5)
    layers = encode(model, seqs, lang_index=1, tag=6, specials=SPECIALS, all_layers=True)
    assert layers.shape == (3, 5, 32)  # input embedding + 2 blocks
    np.testing.assert_allclose(layers[-1], together, atol=1e-5)
    # without specials in the pool, a vector differs (tag and </s> excluded) but stays normalised
    plain = encode(model, seqs, lang_index=1, tag=6, specials=SPECIALS, pool_specials=False)
    assert not np.allclose(plain, together)
