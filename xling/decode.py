"""The KV-cache decoding state shared by generation, streaming and beam search (`xling.generate`).

    lm = _LM(model, prompts, lang_index, max_new)   # prompts through the model once; lm.logits (B, V)
    logits = lm.step(next_tokens)                    # one token per row -> the next (B, V) logits

The prompt goes through the model itself (a `KVCache`); every later token runs `_decode`, a lean copy of
the model's maths over the same weights (`_Weights`, prepared once per model and weight version) and a
preallocated fp32 cache. tests/test_generate.py checks it against the model's own cached forward, full
recomputation and Hugging Face `generate`, token for token.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor, nn

from xling.errors import XlingError
from xling.model import KVCache
from xling.tokenizer import PAD_ID


class _Weights:
    """The decoding step's view of a model's weights, prepared once per model (and weight version).

    fp32 on the CPU: every matrix is kept transposed and contiguous, (in, out), because MKL multiplies
    a few rows by it faster than by F.linear's (out, in)^T (measured at batch 1: c_fc 37 -> 26 us,
    c_attn 18 -> 15 us, the (V, D) output layer 218 -> 143 us; the output layer ~25% of a step). bf16
    keeps F.linear (oneDNN gained nothing from the transposed copy).
    """

    def __init__(self, model: nn.Module):
        cfg = model.cfg
        w = model.wte.weight
        self.dtype = w.dtype
        self.transposed = w.device.type == "cpu" and w.dtype == torch.float32

        def lin(m: nn.Linear) -> tuple[Tensor, Tensor | None]:
            return (m.weight.t().contiguous() if self.transposed else m.weight), m.bias

        def norm(m: nn.Module) -> tuple[Tensor, Tensor | None, float]:
            return m.weight, getattr(m, "bias", None), m.eps if m.eps is not None else 1e-5

        self.rms = cfg.norm == "rmsnorm"
        self.swiglu = cfg.mlp == "swiglu"
        self.layers = [(norm(b.ln_1), lin(b.attn.c_attn), lin(b.attn.c_proj), norm(b.ln_2), lin(b.mlp.c_fc),
                        lin(b.mlp.c_proj)) for b in model.blocks]
        self.ln_f = norm(model.ln_f)
        self.wte = w  # (V, D)
        self.out = model.output_weight  # (V, D): wte itself when tied
        self.head = self.out.t().contiguous() if self.transposed else None  # (D, V)
        self.wpe = model.wpe.weight if model.wpe is not None else None
        self.lang_emb = model.lang_emb.weight if model.lang_emb is not None else None
        self.rope = None
        if cfg.pos == "rope":
            half = cfg.head_dim // 2
            sin = model.rope_sin
            # rotate_half(x) * sin == roll(x, hs/2) * (-sin_lo, sin_hi), exactly (only a sign moves)
            self.rope = (model.rope_cos.to(w.dtype), torch.cat([-sin[:, :half], sin[:, half:]], -1).to(w.dtype))

    def linear(self, x: Tensor, wb: tuple[Tensor, Tensor | None]) -> Tensor:
        w, b = wb
        if not self.transposed:
            return torch.nn.functional.linear(x, w, b)
        return x @ w if b is None else torch.addmm(b, x, w)

    def norm(self, x: Tensor, p: tuple[Tensor, Tensor | None, float]) -> Tensor:
        F = torch.nn.functional
        if self.rms:
            return F.rms_norm(x, (x.shape[-1],), p[0], p[2])
        return F.layer_norm(x, (x.shape[-1],), p[0], p[1], p[2])


_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _version(p: Tensor) -> int:
    try:
        return p._version  # bumped by every in-place change
    except RuntimeError:  # an inference tensor (created under inference_mode) has no version counter
        return -1


def _weights(model: nn.Module) -> _Weights:
    """The model's `_Weights`, rebuilt when a parameter was replaced or changed in place."""
    key = tuple((p.data_ptr(), _version(p)) for p in model.parameters())
    hit = _WEIGHTS.get(model)
    if hit is None or hit[0] != key:
        with torch.no_grad():
            hit = _WEIGHTS[model] = (key, _Weights(model))
    return hit[1]


class _LM:
    """A batch of left-padded prompts in a KV cache, giving next-token logits one step at a time.

    After construction `.logits` (B, V) float is the distribution after each prompt; `step(tokens)`
    appends one token per row and returns the next logits. `max_steps` tokens fit in the model's
    context; `max_new` (if given) caps it further, and sizes the cache.

    The prompt goes through the model once (a `KVCache`); the single-token steps then run a lean copy
    of the model's decoding maths (`_decode`) over the same weights (measured 1.3x less CPU per token
    than calling the model, at batch 1: no module calls, 2-D activations, rope on q and k in one op):
    - the cache is preallocated for every token to come and written in place (no torch.cat per step);
    - it is kept in fp32 even for bf16 weights, and attention runs in fp32: the CPU's SDPA took 136 us
      per layer and token in bf16 against 19 us in fp32 (batch 1; batch 8: 1069 vs 136 us);
    - tests/test_generate.py checks it against full recomputation and Hugging Face, token for token.
    The model runs under inference_mode (measured ~6% less CPU per token than no_grad); its outputs
    are only read, never changed in place, outside it.
    """

    @torch.inference_mode()
    def __init__(self, model: nn.Module, prompts: list[list[int]], lang_index: list[int] | None,
                 max_new: int | None = None):
        self.model = model
        cfg = model.cfg
        dev = next(model.parameters()).device
        lens = [len(p) for p in prompts]
        B, T0 = len(prompts), max(lens)
        if min(lens) == 0:
            raise ValueError("every prompt needs at least one token")
        if T0 > cfg.block_size:
            raise XlingError(f"a prompt of {T0} tokens is longer than the model's block_size "
                             f"({cfg.block_size}); shorten the prompt")
        self.max_steps = cfg.block_size - T0 + 1  # the last token chosen is never fed back
        if max_new is not None:
            self.max_steps = min(self.max_steps, max(max_new, 1))
        idx = torch.full((B, T0), PAD_ID, dtype=torch.long)
        for r, p in enumerate(prompts):
            idx[r, T0 - len(p):] = torch.tensor(p, dtype=torch.long)  # left padding: every row ends at T0-1
        self.idx = idx = idx.to(dev)  # (B, T0)
        padded = min(lens) < T0
        real = pad_mask = positions = None
        self.next_pos = None
        if padded:
            starts = torch.tensor([T0 - n for n in lens])[:, None]  # (B, 1) first real column
            real = pad_mask = (torch.arange(T0)[None, :] >= starts).to(dev)  # (B, T0) True = real
            positions = (pad_mask.long().cumsum(1) - 1).clamp(min=0)  # (B, T0) real tokens counted from 0
            self.next_pos = torch.tensor(lens, device=dev)  # (B,)
        self.real = real  # (B, T0) bool or None
        self.lang = None  # (B,) language index per row, when the model has language embeddings
        if lang_index is not None and cfg.n_langs > 0:
            bad = [i for i in lang_index if not 0 <= i < cfg.n_langs]
            if bad:
                raise XlingError(f"language index {bad[0]} is outside the model's {cfg.n_langs} languages; "
                                 f"use the tokenizer the model was trained with")
            self.lang = torch.tensor(lang_index, device=dev)
        cache = KVCache()
        lang_ids = None if self.lang is None else self.lang[:, None].expand(B, T0)
        h = model(idx, positions=positions, lang_ids=lang_ids, pad_mask=pad_mask, kv_cache=cache)
        self.w = w = _weights(model)
        last = h[:, -1]  # (B, D)
        self.logits = model.lm_head(last).float()  # (B, V)
        if w.head is not None:
            self.logits = (last @ w.head).float()  # what every step computes (see _Weights)
        # the static cache: fp32, room for every token still to be fed; column t = sequence position t
        cap = T0 + self.max_steps - 1
        self.k, self.v = [], []  # per layer (B, nh, cap, hs)
        for k, v in zip(cache.k, cache.v, strict=True):
            shape = (B, cfg.n_head, cap, cfg.head_dim)
            self.k.append(torch.empty(shape, dtype=torch.float32, device=dev))
            self.v.append(torch.empty(shape, dtype=torch.float32, device=dev))
            self.k[-1][:, :, :T0] = k
            self.v[-1][:, :, :T0] = v
        self.key_mask = None  # (B, cap) bool, True = real; None when no prompt is padded
        if padded:
            self.key_mask = torch.ones(B, cap, dtype=torch.bool, device=dev)
            self.key_mask[:, :T0] = real
        self.length = T0  # filled cache columns

    @torch.inference_mode()
    def step(self, tokens: Tensor) -> Tensor:
        """(B,) tokens appended to each row -> (B, V) float logits of the next token."""
        L = self.length
        if L >= self.k[0].shape[2]:
            raise ValueError(f"the cache holds {L} tokens, its capacity; pass a larger max_new")
        pos = L if self.next_pos is None else self.next_pos  # int, or (B,) per-row positions
        logits = _decode(self, tokens, pos, L)
        self.length = L + 1
        if self.next_pos is not None:
            self.next_pos = self.next_pos + 1
        return logits

    @torch.inference_mode()
    def reorder(self, rows: Tensor) -> None:
        """Row i continues row rows[i] (beam search): gather every cached tensor along the batch."""
        self.k = [k.index_select(0, rows) for k in self.k]
        self.v = [v.index_select(0, rows) for v in self.v]
        if self.key_mask is not None:
            self.key_mask = self.key_mask.index_select(0, rows)
        if self.next_pos is not None:
            self.next_pos = self.next_pos.index_select(0, rows)
        if self.lang is not None:
            self.lang = self.lang.index_select(0, rows)

    def seen(self) -> Tensor:
        """(B, V) bool: which tokens each prompt contains (padding excluded), for the repetition penalty."""
        B, V = self.idx.shape[0], self.logits.shape[-1]
        real = self.real if self.real is not None else torch.ones_like(self.idx, dtype=torch.bool)
        counts = torch.zeros(B, V, dtype=torch.long, device=self.idx.device)
        return counts.scatter_add_(1, self.idx, real.long()) > 0  # padding adds 0


def _decode(lm: _LM, tokens: Tensor, pos: int | Tensor, L: int) -> Tensor:
    """One token per row through the model (the maths of Transformer._run with a cache, T = 1):
    (B,) tokens at positions `pos` (int or (B,)), written to cache column L -> (B, V) float logits."""
    F = torch.nn.functional
    w, cfg = lm.w, lm.model.cfg
    B, nh, hs, D = tokens.shape[0], cfg.n_head, cfg.head_dim, cfg.d_model
    x = F.embedding(tokens, w.wte)  # (B, D)
    if w.wpe is not None:
        x = x + w.wpe[pos]  # (B, D) + (D,) or (B, D)
    if w.lang_emb is not None and lm.lang is not None:
        x = x + w.lang_emb[lm.lang]  # (B, D)
    if w.rope is not None:
        cos, sin = w.rope[0][pos], w.rope[1][pos]  # (hs,) or (B, hs)
        if cos.dim() == 2:
            cos, sin = cos[:, None, None], sin[:, None, None]  # (B, 1, 1, hs)
    mask = None if lm.key_mask is None else lm.key_mask[:, None, None, :L + 1]  # (B, 1, 1, L + 1)
    for (n1, qkv_w, o_w, n2, fc_w, proj_w), kc, vc in zip(w.layers, lm.k, lm.v, strict=True):
        qkv = w.linear(w.norm(x, n1), qkv_w).view(B, 3, nh, hs)  # (B, 3, nh, hs): q, k, v
        if w.rope is not None:
            qk = qkv[:, :2]  # (B, 2, nh, hs)
            qk = qk * cos + qk.roll(hs // 2, -1) * sin  # = q * cos + rotate_half(q) * sin, for q and k
            q, k = qk[:, 0], qk[:, 1]  # (B, nh, hs) each
        else:
            q, k = qkv[:, 0], qkv[:, 1]
        kc[:, :, L] = k  # (B, nh, hs) into (B, nh, cap, hs), cast to the cache's fp32
        vc[:, :, L] = qkv[:, 2]
        y = F.scaled_dot_product_attention(q[:, :, None].to(kc.dtype), kc[:, :, :L + 1], vc[:, :, :L + 1],
                                           attn_mask=mask)  # (B, nh, 1, hs)
        x = x + w.linear(y.to(x.dtype).reshape(B, D), o_w)  # (B, D)
        h = w.linear(w.norm(x, n2), fc_w)  # (B, F) or (B, 2F)
        if w.swiglu:
            gate, up = h.chunk(2, dim=-1)  # (B, F) each
            h = F.silu(gate) * up
        else:
            h = F.gelu(h, approximate="tanh")
        x = x + w.linear(h, proj_w)  # (B, D)
    x = w.norm(x, w.ln_f)  # (B, D)
    return (x @ w.head if w.head is not None else F.linear(x, w.out)).float()  # (B, V)
