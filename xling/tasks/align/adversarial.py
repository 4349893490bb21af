"""Unsupervised cross-lingual mapping by adversarial training (MUSE, Conneau et al. 2018).

    from xling.tasks.align.config import AlignConfig
    from xling.tasks.align.mapping import criterion, refine
    w, history = adversarial(x, y, cfg, score=lambda w: criterion(x, y, w, cfg))  # x, y: (n, d), most frequent first
    w, _ = refine(x, y, w, cfg)                       # then Procrustes refinement (align.learn_mapping)
    x, y, rot = synthetic_pair(50000, 300)            # a structured test set: y ~ x @ rot.T

The game (ALGORITHMS.md): a discriminator D (d -> h -> h -> 1, LeakyReLU 0.2, input dropout,
label smoothing) learns to tell mapped source vectors W x from target vectors y, both drawn
uniformly from the `adv_most_frequent` most frequent words; W, initialised to the identity,
learns to fool it (`adv_dis_steps` D steps per W step, SGD), and after each W step is pulled
back towards the orthogonal matrices: W <- (1 + beta) W - beta (W W^T) W. After every epoch
the unsupervised criterion (mean cosine of the most confident CSLS pairs) scores W; the mapping
lr decays every epoch and shrinks when the criterion falls below its best (from the second time
on), and the best epoch's W is returned. Seeded and deterministic on CPU.

CPU schedule. MUSE's (5 epochs of 1M words, batch 32, hidden 2048) is ~156k W steps, hours on
2 cores. bench/align.py runs the same game with batch 128, hidden 512 and lr 0.5 (the losses are
batch means: a larger batch is a less noisy step of the same size, so the lr is raised to move
as far per word): ~85 ms of CPU a W step at 50k x 300 on one thread.

Synthetic data. A rotated isotropic Gaussian cloud is indistinguishable from the cloud itself:
no adversary (and no unsupervised method) can recover the rotation from it. Real embeddings are
not like that, and `synthetic_pair` keeps the three properties the adversarial method relies
on: an anisotropic covariance whose eigenvalues decay with a power law (steeper still in Bible
skip-gram vectors, d = 300, normalised: the first is ~3000x the 150th), so matching the second
moments fixes the main axes; clusters (topics) of Zipf-distributed sizes, so the density is
lumpy; and a frequency order, rarer words noisier, so sampling the most frequent words means
something. The target is a random rotation (determinant +1) of the source plus noise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from xling.progress import progress

if TYPE_CHECKING:
    from xling.tasks.align.config import AlignConfig


def orthogonalize(w, beta: float):
    """One step towards the orthogonal manifold: W <- (1 + beta) W - beta (W W^T) W (MUSE, Cisse et al.).

    Works on numpy arrays and torch tensors alike; a W with singular values s moves each to
    s + beta s (1 - s^2), so an orthogonal W stays fixed and a nearly orthogonal one gets closer."""
    return (1 + beta) * w - beta * (w @ w.T) @ w


def random_rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation (d, d): orthogonal with determinant +1.

    Haar-random orthogonal matrices are reflections half the time, and a W that starts at the
    identity and stays near-orthogonal can never reach one (it would have to pass through a
    singular matrix), so a reflected test set is one no adversarial run can solve."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    q = q * np.sign(np.diag(r))  # Haar on O(d)
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def synthetic_pair(n: int, d: int, *, seed: int = 0, clusters: int = 100, decay: float = 1.0,
                   spread: float = 0.5, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A structured source set x (n, d), target y = x R^T + noise, and R (d, d) (see the module doc).

    Word i (frequency rank i) belongs to one of `clusters` topics with Zipf sizes; it sits at its
    topic's centre plus `spread` of within-topic noise, both scaled per axis by sqrt(j^-decay)
    (covariance eigenvalues ~ j^-decay). The target adds isotropic noise of relative size `noise`
    for the most frequent word rising to 2 x `noise` for the rarest. Float32 outputs.
    """
    rng = np.random.default_rng(seed)
    scale = (np.arange(1, d + 1, dtype=np.float64) ** (-decay / 2)).astype(np.float32)  # (d,) per-axis std
    centres = rng.standard_normal((clusters, d), dtype=np.float32) * scale  # (c, d)
    sizes = 1.0 / np.arange(1, clusters + 1)
    topic = rng.choice(clusters, size=n, p=sizes / sizes.sum())  # (n,)
    x = centres[topic] + spread * rng.standard_normal((n, d), dtype=np.float32) * scale  # (n, d)
    rot = random_rotation(d, rng).astype(np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True) / np.sqrt(d)  # (n, 1)
    rel = noise * (1 + np.arange(n, dtype=np.float32) / max(n - 1, 1))[:, None]  # (n, 1) rarer = noisier
    y = x @ rot.T + rel * norms * rng.standard_normal((n, d), dtype=np.float32)
    return x, y.astype(np.float32), rot


def adversarial(x: np.ndarray, y: np.ndarray, cfg: AlignConfig, log: Callable[[str], None] = print, *,
                score: Callable[[np.ndarray], float]) -> tuple[np.ndarray, list[dict]]:
    """MUSE's adversarial training of an orthogonal map W (x -> W x), without any dictionary.

    `x`, `y`: normalised vectors, most frequent word first. `score(W)` is the model-selection
    criterion (align.py passes MUSE's, `xling.tasks.align.criterion`). Returns the best epoch's W (d, d) float64
    and one history entry per epoch.
    """
    import torch


    n_s, n_t = min(cfg.adv_most_frequent, len(x)), min(cfg.adv_most_frequent, len(y))
    xs = torch.from_numpy(np.ascontiguousarray(x[:n_s], dtype=np.float32))  # (n_s, d)
    ys = torch.from_numpy(np.ascontiguousarray(y[:n_t], dtype=np.float32))  # (n_t, d)
    threads = torch.get_num_threads()
    if cfg.adv_threads:
        torch.set_num_threads(cfg.adv_threads)
    try:  # fp32 even inside a caller's bf16 autocast (`xling evaluate`): W moves by tiny steps, and a nested
        with torch.autocast("cpu", enabled=False):  # autocast would keep W's first bf16 cast (trainer.py)
            return _train(xs, ys, cfg, log, score)
    finally:
        torch.set_num_threads(threads)


def _train(xs, ys, cfg: AlignConfig, log, score) -> tuple[np.ndarray, list[dict]]:
    import torch
    from torch import nn

    (n_s, d), n_t = xs.shape, len(ys)
    bs, smooth = cfg.adv_batch, cfg.adv_smooth
    # mapped source words are labelled 1 - smooth, target words smooth (MUSE)
    labels = torch.cat([torch.full((bs,), 1 - smooth), torch.full((bs,), smooth)])  # (2 bs,)
    history: list[dict] = []
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG is left as it was
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        mapping = nn.Linear(d, d, bias=False)
        with torch.no_grad():
            mapping.weight.copy_(torch.eye(d))
        h = cfg.adv_hidden
        disc = nn.Sequential(nn.Dropout(cfg.adv_dropout), nn.Linear(d, h), nn.LeakyReLU(0.2),
                             nn.Linear(h, h), nn.LeakyReLU(0.2), nn.Linear(h, 1))
        opt_d = torch.optim.SGD(disc.parameters(), lr=cfg.adv_lr)
        opt_m = torch.optim.SGD(mapping.parameters(), lr=cfg.adv_lr)
        bce = nn.BCEWithLogitsLoss()  # = sigmoid output + BCE, computed stably

        def batch(grad: bool):
            src = xs[torch.randint(n_s, (bs,), generator=gen)]  # (bs, d)
            tgt = ys[torch.randint(n_t, (bs,), generator=gen)]  # (bs, d)
            with torch.set_grad_enabled(grad):
                return torch.cat([mapping(src), tgt])  # (2 bs, d)

        best_w, best = mapping.weight.detach().double().numpy().copy(), -np.inf
        steps = max(1, cfg.adv_epoch_size // bs)
        worse_before = False
        for epoch in range(cfg.adv_epochs):
            t0, d_loss = time.perf_counter(), 0.0
            for _ in progress(range(steps), desc=f"adversarial epoch {epoch}", unit="step"):
                disc.train()
                for _ in range(cfg.adv_dis_steps):
                    loss = bce(disc(batch(grad=False)).squeeze(1), labels)
                    opt_d.zero_grad(set_to_none=True)
                    loss.backward()
                    opt_d.step()
                d_loss += float(loss.detach())
                disc.eval()  # no dropout while the mapping learns to fool the discriminator
                loss = bce(disc(batch(grad=True)).squeeze(1), 1 - labels)
                opt_m.zero_grad(set_to_none=True)
                loss.backward()
                opt_m.step()
                with torch.no_grad():
                    mapping.weight.copy_(orthogonalize(mapping.weight, cfg.adv_beta))
            w = mapping.weight.detach().double().numpy().copy()
            crit = score(w)
            lr = opt_m.param_groups[0]["lr"]
            history.append({"epoch": epoch, "criterion": crit, "dis_loss": d_loss / steps, "lr": lr,
                            "seconds": time.perf_counter() - t0})
            log(f"adversarial epoch {epoch}: criterion {crit:.4f}, discriminator loss {d_loss / steps:.4f}, "
                f"lr {lr:.4g}")
            new_lr = max(cfg.adv_min_lr, lr * cfg.adv_lr_decay)
            if crit < best:  # MUSE shrinks the lr from the second time the criterion falls below its best
                if worse_before:
                    new_lr *= cfg.adv_lr_shrink
                worse_before = True
            if crit > best:
                best_w, best = w, crit
            for g in opt_m.param_groups:
                g["lr"] = new_lr
            if new_lr < cfg.adv_min_lr:
                break
    return best_w, history


__all__ = ["adversarial", "orthogonalize", "random_rotation", "synthetic_pair"]
