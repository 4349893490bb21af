"""Adversarial (MUSE) alignment: orthogonalisation, the structured synthetic set, determinism, and the
unsupervised model selection between the adversarial and identical-strings starts. (Recovery of a small
rotation by the adversarial method: tests/test_align.py::test_adversarial_recovers_a_rotation_deterministically.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xling.tasks.align.adversarial import adversarial, orthogonalize, random_rotation, synthetic_pair
from xling.tasks.align.config import AlignConfig
from xling.tasks.align.csls import Space, evaluate_bli
from xling.tasks.align.mapping import criterion, normalize_embeddings
from xling.tasks.align.run import align_metrics, selected_methods


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_cfg(**kw) -> AlignConfig:
    base = dict(adv_hidden=64, adv_threads=1, adv_batch=64, refine_iters=3, refine_max_rank=0, select_max_rank=0,
                select_pairs=0, csls_vocab=0, normalize="", write_vectors=False)
    return AlignConfig(**{**base, **kw})


def test_orthogonalize_keeps_an_orthogonal_w_and_pulls_a_perturbed_one_back():
    rng = np.random.default_rng(0)
    r = random_rotation(32, rng)
    np.testing.assert_allclose(orthogonalize(r, 0.001), r, atol=1e-12)  # a fixed point
    w = r + 0.01 * rng.normal(size=(32, 32))
    err = [np.abs(w @ w.T - np.eye(32)).max()]
    for _ in range(200):
        w = orthogonalize(w, 0.01)
        err.append(np.abs(w @ w.T - np.eye(32)).max())
    assert all(b < a for a, b in zip(err, err[1:], strict=False))  # every step gets closer
    assert err[-1] < 0.05 * err[0]
    # singular values s -> s + beta s (1 - s^2): the update in closed form, on torch tensors too
    s0 = np.linalg.svd(r + 0.01 * rng.normal(size=(32, 32)), compute_uv=False)
    wt = torch.from_numpy(np.diag(s0))
    np.testing.assert_allclose(np.diag(orthogonalize(wt, 0.1).numpy()), s0 + 0.1 * s0 * (1 - s0**2), atol=1e-12)


def test_synthetic_pair_is_a_noisy_rotation_with_structure():
    x, y, rot = synthetic_pair(3000, 32, seed=0, clusters=20, noise=0.05)
    assert x.dtype == y.dtype == np.float32 and x.shape == y.shape == (3000, 32)
    np.testing.assert_allclose(rot @ rot.T, np.eye(32), atol=1e-5)
    resid = np.linalg.norm(y - x @ rot.T, axis=1) / np.linalg.norm(x, axis=1)  # (n,) relative noise
    assert 0.03 < resid[:300].mean() < resid[-300:].mean() < 0.12  # rarer words are noisier
    # anisotropic: the covariance's eigenvalues decay (an isotropic cloud would give a flat spectrum, and
    # a rotation of it could not be told from the cloud itself)
    ev = np.linalg.eigvalsh(np.cov(x.T))[::-1]
    assert ev[0] > 20 * ev[-1]
    # lumpy: the Zipf-sized clusters make nearest neighbours much closer than random pairs
    xn = normalize_embeddings(x[:500], "renorm")
    sims = xn @ xn.T - 2 * np.eye(500)
    assert sims.max(axis=1).mean() > 0.8 and abs(sims[sims > -1].mean()) < 0.5


def test_adversarial_is_deterministic_and_leaves_the_global_rng_alone():
    x, y, _ = synthetic_pair(300, 8, seed=2, clusters=10)
    cfg = small_cfg(adv_epochs=1, adv_epoch_size=64 * 20, seed=5)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    w1, h1 = adversarial(x, y, cfg, log=lambda s: None, score=lambda w: criterion(x, y, w, cfg))
    after = torch.rand(1)
    w2, h2 = adversarial(x, y, cfg, log=lambda s: None, score=lambda w: criterion(x, y, w, cfg))
    np.testing.assert_array_equal(w1, w2)
    assert h1[0]["criterion"] == h2[0]["criterion"]
    assert torch.equal(before, after)
    w3, _ = adversarial(x, y, small_cfg(adv_epochs=1, adv_epoch_size=64 * 20, seed=6), log=lambda s: None,
                       score=lambda w: criterion(x, y, w, cfg))
    assert not np.array_equal(w1, w3)


def test_model_selection_picks_the_start_with_the_better_criterion_and_says_so():
    results = {"pair": "en-xx", "methods": {
        "procrustes": {"criterion": 0.60, "csls": {"p@1": 0.30}, "nn": {"p@1": 0.2}},
        "procrustes-refine": {"criterion": 0.70, "csls": {"p@1": 0.40}, "nn": {"p@1": 0.3}},
        "adversarial": {"criterion": 0.55, "csls": {"p@1": 0.01}, "nn": {"p@1": 0.0}},
        "identical": {"criterion": 0.72, "csls": {"p@1": 0.38}, "nn": {"p@1": 0.3}}}}
    assert selected_methods(results) == {"supervised": "procrustes-refine", "unsupervised": "identical"}
    m = align_metrics(results)
    assert m["align.p_at_1.en-xx.unsupervised"] == 0.38 and m["align.p_at_1.en-xx.supervised"] == 0.40
    assert m["align.p_at_1.en-xx.adversarial.csls"] == 0.01  # the loser is still reported
    results["methods"]["adversarial"]["criterion"] = 0.80
    assert selected_methods(results)["unsupervised"] == "adversarial"
    del results["methods"]["identical"]  # e.g. no identical strings across scripts
    assert selected_methods(results)["unsupervised"] == "adversarial"


def test_restarts_keep_the_run_with_the_best_refined_criterion(monkeypatch):
    """`adversarial_restarts` runs every seed, refines each map and keeps the best by the unsupervised
    criterion after refinement. The adversarial game is replaced by maps chosen per seed (two wrong, one
    near the rotation); refinement and the criterion are real."""
    from xling.tasks.align import mapping as align

    x, y, rot = synthetic_pair(2000, 16, seed=3, clusters=20)
    x, y = normalize_embeddings(x, "renorm"), normalize_embeddings(y, "renorm")
    rng = np.random.default_rng(0)
    near = rot + 0.04 * rng.normal(size=rot.shape)  # the right map, perturbed: refinement recovers it
    maps = {0: random_rotation(16, rng), 1: near, 2: random_rotation(16, rng)}  # 0, 2: maps to nowhere
    seeds = []

    def fake_adversarial(x_, y_, cfg, log, score):
        seeds.append(cfg.seed)
        return maps[cfg.seed], [{"epoch": 0, "criterion": 0.0}]

    monkeypatch.setattr(align, "adversarial", fake_adversarial)
    gold = np.stack([np.arange(500), np.arange(500)], axis=1)

    w, info = align.adversarial_restarts(x, y, small_cfg(adv_restarts=3), log=lambda s: None)
    assert seeds == [0, 1, 2] and [r["seed"] for r in info["runs"]] == [0, 1, 2]
    crit = [r["refined_criterion"] for r in info["runs"]]
    assert crit[1] == max(crit) > 0.99 and max(crit[0], crit[2]) < 0.95
    np.testing.assert_array_equal(info["raw_w"], near)  # the kept run's own start and history
    assert max(h["criterion"] for h in info["history"]) == crit[1]
    assert evaluate_bli(Space(x @ w.T, y), gold, "csls", ks=(1,))[0][1] > 0.95

    seeds.clear()  # one run: it is returned whatever it is
    w, info = align.adversarial_restarts(x, y, small_cfg(adv_restarts=1), log=lambda s: None)
    assert seeds == [0] and len(info["runs"]) == 1
    assert evaluate_bli(Space(x @ w.T, y), gold, "csls", ks=(1,))[0][1] < 0.1
