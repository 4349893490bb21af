"""The xling Transformer: one decoder-style stack that runs causal or bidirectional.

The same weights serve generation (causal LM), masked LM / translation LM and
sentence encoding (bidirectional): `causal` is a forward argument, not a model
type. Everything is here in one file, and the file imports nothing of xling:

    cfg = ModelConfig.preset("tiny", vocab_size=300, n_langs=3)   # or preset(..., **FAMILIES["gpt2"])
    model = Transformer(cfg)
    h = model(idx)                                   # (B, T, D) causal, after the final norm
    logits = model.lm_head(h)                        # (B, T, V), tied to the token embedding
    h = model(idx, causal=False, pad_mask=real)      # bidirectional, padding keys ignored
    h = model(idx, positions=pos, lang_ids=lang)     # TLM: positions restart per segment, XLM language ids
    layers = model.hidden_states(idx, causal=False)  # n_layer + 1 tensors (HF convention, see below)

The maths, per block (pre-norm):  x = x + attn(norm_1(x));  x = x + mlp(norm_2(x)).
Input:  x = wte[idx] (+ wpe[positions] if pos="learned") (+ lang_emb[lang_ids] if n_langs > 0);
with pos="rope", q and k are rotated by their positions inside attention instead.
Output: norm_f(x); logits = norm_f(x) @ wte^T (tied, the default), or @ lm_out^T with tie_embeddings=False.

Two export families (`xling.hf` maps the weights; tests/test_model.py proves both by parity):
- the default, FAMILIES["llama"] (pos="rope", norm="rmsnorm", mlp="swiglu", bias=False), is exactly
  Hugging Face Llama (`LlamaForCausalLM` with tie_word_embeddings=True, num_key_value_heads = n_head,
  intermediate_size = ff_dim, rope_theta, rms_norm_eps = norm_eps): split the fused c_attn weight
  into q/k/v_proj and c_fc into gate_proj/up_proj (gate first).
- FAMILIES["gpt2"] (pos="learned", norm="layernorm", mlp="gelu", bias=True) is exactly GPT-2
  (`GPT2LMHeadModel`, activation "gelu_new", tied embeddings); GPT-2's Conv1D weights are (in, out),
  ours (out, in): transpose on export.
- Language embeddings have no place in either HF model. They fold into the export only when every
  sequence has one language and the exported model serves that language alone (add lang_emb[l] to
  every wte row, which also changes the tied output layer); in general they do not.

Why rope + the Llama family by default (measured, one process, steps interleaved; 5 Bibles en/fr/de/
ru/ar, byte-level BPE 8k, the "small" size, batch 16 x 128, AdamW 1e-3, bf16 + torch.compile,
200 steps = 410k tokens per model, held-out chapters; valid loss in nats):
    learned + LayerNorm + GELU (GPT-2)   5.943, 5.907 (2 seeds)   546 tok/s
    rope + LayerNorm + GELU              5.824, 5.811 (2 seeds)   534 tok/s
    rope + RMSNorm + SwiGLU (Llama)      5.849 (1 seed)           604 tok/s
Rope learned faster (-0.11 nats, seed spread 0.04) at about the same step time; Llama's RMSNorm and
bias-free SwiGLU kept that loss within seed noise and stepped fastest (tokens/s are from a shared,
heavily loaded 2-core machine: read them as ratios). Only a short run: the gap may shrink with
more tokens, but a CPU demo lives in exactly this short regime.

Positions: `positions` (B, T) lets TLM restart positions at the second segment.

Padding: `pad_mask` (B, T) bool, True = real token. Padding keys are never attended to. A padded
query still attends to itself (so no softmax row is empty, which would give NaN that then leaks
through 0 * NaN); outputs at padded positions are meaningless and must be ignored by the caller.

Decoding: pass a `KVCache()` as `kv_cache` (causal only). Each call appends the new keys/values of
every layer; positions continue from the cached length unless given. See `KVCache`.

Speed knobs stay outside the model; bench/train_throughput.py measures the fastest CPU path:
bf16 autocast, torch.compile(fullgraph=True, dynamic=False) of forward + loss together, SDPA's math
backend inside the compiled region (`with torch.nn.attention.sdpa_kernel(SDPBackend.MATH):` so that
inductor fuses the softmax; the CPU flash kernel's backward took ~19% of a training step), fused
AdamW. The forward has no data-dependent Python branches and no `.item()`, so fullgraph compiles work.
Varying lengths: every new (B, T), and every pattern of which optional arguments are None, is a new
graph. With dynamic=False each new length compiles cold (~20 s quiet, 40-80 s on a loaded machine)
until torch._dynamo.config.recompile_limit (8 per compiled function) is reached, after which that
function runs eager; with the default dynamic=None the second length recompiles once with a symbolic
T and never again, but dynamic graphs ran only ~1.1x eager here. So: pad variable-length
(pair) batches to a multiple of 32 (4 buckets at block_size 128), keep B fixed, compile with
dynamic=False, and raise recompile_limit to cover buckets x argument patterns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Named sizes. `ModelConfig.preset(name, **overrides)` builds a config from one of them.
PRESETS: dict[str, dict] = {
    "tiny": dict(n_layer=2, d_model=32, n_head=2, block_size=64),  # unit tests
    "small": dict(n_layer=4, d_model=256, n_head=4, block_size=128),  # the CPU demo
    "base": dict(n_layer=12, d_model=768, n_head=12, block_size=512),  # GPT-2 / BERT-base size, for a GPU
}
# Architecture families that equal a Hugging Face model exactly; "llama" is the default.
FAMILIES: dict[str, dict] = {
    "llama": dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False),
    "gpt2": dict(pos="learned", norm="layernorm", mlp="gelu", bias=True),
}


@dataclass
class ModelConfig:
    vocab_size: int = 8000  # token ids 0..vocab_size-1; must equal the tokenizer's vocabulary size
    n_langs: int = 0  # languages with a learned embedding (XLM); 0 = off. Index = position in Shards.langs
    block_size: int = 128  # longest sequence (learned positions / rope table size)
    n_layer: int = 4  # Transformer blocks
    d_model: int = 256  # hidden size
    n_head: int = 4  # attention heads; d_model must be divisible by n_head
    d_ff: int = 0  # MLP hidden size; 0 = 4 * d_model (gelu) or 8/3 * d_model rounded up to 32 (swiglu)
    pos: str = "rope"  # rope (rotary, Llama) | learned (GPT-2); rope chosen by measurement (see above)
    norm: str = "rmsnorm"  # rmsnorm (Llama) | layernorm (GPT-2)
    mlp: str = "swiglu"  # swiglu (Llama) | gelu (GPT-2, tanh approximation)
    bias: bool = False  # biases in Linear and LayerNorm (GPT-2 has them, Llama not)
    norm_eps: float = 1e-5  # epsilon of every norm (GPT-2 1e-5; Llama usually 1e-6 or 1e-5)
    rope_theta: float = 10000.0  # rope base frequency (pos = "rope" only)
    dropout: float = 0.0  # dropout on embeddings, attention weights and residual branches
    # the output layer is the token embedding (GPT-2; Llama's tie_word_embeddings). false: an output matrix of its
    # own (`lm_out`), so what next-token prediction needs of it does not pull on the input embeddings that
    # contrastive alignment and the LSI start shape (measured in configs/demo.toml)
    tie_embeddings: bool = True

    def __post_init__(self):
        if self.d_model % self.n_head:
            lo = self.d_model // self.n_head * self.n_head
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}; "
                             f"choose a d_model such as {lo or self.n_head} or {lo + self.n_head}, "
                             f"or an n_head that divides {self.d_model}")
        for name, value, choices in (("pos", self.pos, ("learned", "rope")),
                                     ("norm", self.norm, ("layernorm", "rmsnorm")),
                                     ("mlp", self.mlp, ("gelu", "swiglu"))):
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        if self.pos == "rope" and (self.d_model // self.n_head) % 2:
            raise ValueError(f"rope needs an even head size, d_model/n_head = {self.d_model // self.n_head}")
        for name in ("vocab_size", "block_size", "n_layer", "d_model", "n_head"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.n_langs < 0 or self.d_ff < 0:
            raise ValueError("n_langs and d_ff must be >= 0 (0 = off / automatic)")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")

    @classmethod
    def preset(cls, name: str, **overrides) -> ModelConfig:
        """A named size (tiny, small, base) with any field overridden, e.g. preset("tiny", vocab_size=300)."""
        if name not in PRESETS:
            raise ValueError(f"unknown model size {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def ff_dim(self) -> int:
        if self.d_ff:
            return self.d_ff
        if self.mlp == "swiglu":  # three matrices instead of two: 2/3 of the width keeps the parameter count
            return 32 * math.ceil(8 * self.d_model / 3 / 32)
        return 4 * self.d_model


class KVCache:
    """Keys and values of the tokens seen so far, for fast causal decoding.

        cache = KVCache()
        h = model(prompt, kv_cache=cache)      # (B, T0): fills the cache, positions 0..T0-1
        h = model(next_ids, kv_cache=cache)    # (B, 1): attends to all T0 cached keys, position T0

    The cache also remembers which cached keys were padding (from `pad_mask`), so a left-padded
    prompt batch decodes correctly; pass `positions` then (real tokens counted from 0).
    """

    def __init__(self):
        self.k: list[Tensor] = []  # per layer (B, nh, T_cached, hs)
        self.v: list[Tensor] = []  # per layer (B, nh, T_cached, hs)
        self.key_mask: Tensor | None = None  # (B, T_cached) bool, True = real; None = no padding seen

    def __len__(self) -> int:
        return self.k[0].shape[2] if self.k else 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append this step's (B, nh, T, hs) keys/values of one layer; return all of them."""
        if layer == len(self.k):
            self.k.append(k)
            self.v.append(v)
        else:
            self.k[layer] = torch.cat([self.k[layer], k], dim=2)  # (B, nh, T_cached + T, hs)
            self.v[layer] = torch.cat([self.v[layer], v], dim=2)  # (B, nh, T_cached + T, hs)
        return self.k[layer], self.v[layer]

    def reorder(self, rows: Tensor) -> None:
        """Row i continues row rows[i] (beam search): gather every cached tensor along the batch."""
        self.k = [k.index_select(0, rows) for k in self.k]  # (B', nh, T_cached, hs) each
        self.v = [v.index_select(0, rows) for v in self.v]  # (B', nh, T_cached, hs) each
        if self.key_mask is not None:
            self.key_mask = self.key_mask.index_select(0, rows)  # (B', T_cached)


def _norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)


def _rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim (the Llama / GPT-NeoX rope layout)."""
    x1, x2 = x.chunk(2, dim=-1)  # (..., hs/2) each
    return torch.cat([-x2, x1], dim=-1)  # (..., hs)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.head_dim, self.dropout = cfg.n_head, cfg.head_dim, cfg.dropout
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None, mask: Tensor | None, is_causal: bool,
                kv_cache: KVCache | None, layer: int) -> Tensor:
        B, T, D = x.shape
        q, k, v = self.c_attn(x).split(D, dim=2)  # (B, T, D) each
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        if rope is not None:
            # q is bf16 under autocast and SDPA needs q, k, v of one dtype: do not promote to fp32
            cos, sin = rope[0].to(q.dtype), rope[1].to(q.dtype)  # (B or 1, 1, T, hs) each
            q = q * cos + _rotate_half(q) * sin  # (B, nh, T, hs)
            k = k * cos + _rotate_half(k) * sin  # (B, nh, T, hs)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)  # (B, nh, T_cached + T, hs) each
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.resid_drop(self.c_proj(y))  # (B, T, D)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        # swiglu: gate and up projections fused in one matmul, gate first (Llama's gate_proj, up_proj)
        self.c_fc = nn.Linear(cfg.d_model, (2 if self.swiglu else 1) * cfg.ff_dim, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.ff_dim, cfg.d_model, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.c_fc(x)  # (B, T, F) or (B, T, 2F)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)  # (B, T, F) each
            h = F.silu(gate) * up  # (B, T, F)
        else:
            h = F.gelu(h, approximate="tanh")  # (B, T, F); GPT-2's "gelu_new"
        return self.drop(self.c_proj(h))  # (B, T, D)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1, self.attn = _norm(cfg), Attention(cfg)
        self.ln_2, self.mlp = _norm(cfg), MLP(cfg)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None, mask: Tensor | None, is_causal: bool,
                kv_cache: KVCache | None, layer: int) -> Tensor:
        x = x + self.attn(self.ln_1(x), rope, mask, is_causal, kv_cache, layer)  # (B, T, D)
        return x + self.mlp(self.ln_2(x))  # (B, T, D)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)  # also the output layer when tied
        self.lm_out = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.wpe = nn.Embedding(cfg.block_size, cfg.d_model) if cfg.pos == "learned" else None
        self.lang_emb = nn.Embedding(cfg.n_langs, cfg.d_model) if cfg.n_langs > 0 else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = _norm(cfg)
        if cfg.pos == "rope":
            exponent = torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim  # (hs/2,)
            inv_freq = 1.0 / cfg.rope_theta**exponent  # (hs/2,) theta^(-2i/hs)
            angles = torch.outer(torch.arange(cfg.block_size).float(), inv_freq)  # (block, hs/2)
            angles = torch.cat([angles, angles], dim=-1)  # (block, hs): the same angle for both halves
            # derived from the config: not saved in checkpoints
            self.register_buffer("rope_cos", angles.cos(), persistent=False)  # (block, hs)
            self.register_buffer("rope_sin", angles.sin(), persistent=False)  # (block, hs)
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer), so the residual stream's variance
        # does not grow with depth
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # std 0.02 everywhere (GPT-2); N(0, 1) embeddings with a tied output layer broke MLM (measured, demo corpus)
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Parameters, the tied output layer counted once; optionally without wte/wpe/lang_emb."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= sum(e.weight.numel() for e in (self.wte, self.wpe, self.lang_emb) if e is not None)
        return n

    @property
    def output_weight(self) -> Tensor:
        """(V, D) the output matrix: the token embedding when tied, else lm_out's."""
        return self.wte.weight if self.lm_out is None else self.lm_out.weight

    def lm_head(self, hidden: Tensor) -> Tensor:
        """(..., D) -> (..., V) logits: the output matrix (the token embedding when tied) times the hidden state."""
        return F.linear(hidden, self.output_weight)  # (..., V)

    def forward(self, idx: Tensor, *, causal: bool = True, positions: Tensor | None = None,
                lang_ids: Tensor | None = None, pad_mask: Tensor | None = None,
                kv_cache: KVCache | None = None, prefix_len: Tensor | None = None) -> Tensor:
        """(B, T) token ids -> (B, T, D) hidden states after the final norm.

        causal:    True: position t sees 0..t (generation); False: sees every real position.
        positions: (B, T) long position of each token (default 0..T-1, or continuing after the
                   cache); TLM restarts them at the second segment. Values must be < block_size.
        lang_ids:  (B, T) long language index per token, added as a learned vector when n_langs > 0.
                   None adds nothing (the model then reads only the tokens, e.g. a language tag);
                   ignored when n_langs == 0, so objectives can always pass it.
        pad_mask:  (B, T) bool, True = real token; padding keys are never attended to.
        kv_cache:  a KVCache to append this call's keys/values to (causal decoding only).
        prefix_len: (B,) long, causal only: the first prefix_len[b] positions of row b (counted in the
                   row, cached keys included) are seen by every query: a prefix LM, e.g. a translation's
                   source read bidirectionally and its target causally (UniLM, T5's prefix LM).
        """
        return self._run(idx, causal, positions, lang_ids, pad_mask, kv_cache, None, prefix_len)

    def hidden_states(self, idx: Tensor, *, causal: bool = True, positions: Tensor | None = None,
                      lang_ids: Tensor | None = None, pad_mask: Tensor | None = None) -> list[Tensor]:
        """Every layer's output, as Hugging Face's `output_hidden_states`: n_layer + 1 tensors (B, T, D).

        [0] is the input embedding, [i] the residual stream after block i for i < n_layer, and the
        last is the final block's output after the final norm, i.e. equal to `forward(...)`.
        """
        out: list[Tensor] = []
        self._run(idx, causal, positions, lang_ids, pad_mask, None, out)
        return out

    def _run(self, idx: Tensor, causal: bool, positions: Tensor | None, lang_ids: Tensor | None,
             pad_mask: Tensor | None, kv_cache: KVCache | None, collect: list[Tensor] | None,
             prefix_len: Tensor | None = None) -> Tensor:
        cfg = self.cfg
        B, T = idx.shape  # batch, new tokens
        past = 0 if kv_cache is None else len(kv_cache)
        if kv_cache is not None and not causal:
            raise ValueError("kv_cache is for causal decoding; call with causal=True")
        if past + T > cfg.block_size:
            raise ValueError(f"sequence of {past + T} tokens is longer than block_size={cfg.block_size}")

        x = self.wte(idx)  # (B, T, D)
        rope = None
        if positions is None:
            pos = torch.arange(past, past + T, device=idx.device)  # (T,), shared by the batch
            if self.wpe is not None:
                x = x + self.wpe(pos)  # (B, T, D) + (T, D)
            else:
                rope = self.rope_cos[pos][None, None], self.rope_sin[pos][None, None]  # (1, 1, T, hs) each
        elif self.wpe is not None:
            x = x + self.wpe(positions)  # (B, T, D)
        else:
            rope = self.rope_cos[positions][:, None], self.rope_sin[positions][:, None]  # (B, 1, T, hs) each
        if self.lang_emb is not None and lang_ids is not None:
            x = x + self.lang_emb(lang_ids)  # (B, T, D)
        x = self.drop(x)  # (B, T, D)

        mask, is_causal = self._attn_mask(B, T, past, causal, pad_mask, kv_cache, idx.device, prefix_len)
        if collect is not None:
            collect.append(x)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, mask, is_causal, kv_cache, i)  # (B, T, D)
            if collect is not None and i < len(self.blocks) - 1:
                collect.append(x)
        x = self.ln_f(x)  # (B, T, D)
        if collect is not None:
            collect.append(x)
        return x

    @staticmethod
    def _attn_mask(B: int, T: int, past: int, causal: bool, pad_mask: Tensor | None,
                   kv_cache: KVCache | None, device: torch.device,
                   prefix_len: Tensor | None = None) -> tuple[Tensor | None, bool]:
        """The SDPA mask (True = may attend) for T queries over past + T keys, or the is_causal flag.

        Without padding the fast paths need no mask: is_causal for a plain causal pass, nothing for
        a bidirectional one or for a single decoded token (it sees every cached key). With a cache,
        this call's pad_mask is appended to the cache's key mask. prefix_len (B,) opens the first
        prefix_len[b] keys of row b to every query (causal only).
        """
        if prefix_len is not None and not causal:
            raise ValueError("prefix_len is for causal passes (a bidirectional pass already sees everything)")
        key_mask = pad_mask  # (B, T) or None
        if kv_cache is not None:
            if kv_cache.key_mask is not None or pad_mask is not None:
                old = kv_cache.key_mask if kv_cache.key_mask is not None else \
                    torch.ones(B, past, dtype=torch.bool, device=device)  # (B, past)
                new = pad_mask if pad_mask is not None else \
                    torch.ones(B, T, dtype=torch.bool, device=device)  # (B, T)
                key_mask = kv_cache.key_mask = torch.cat([old, new], dim=1)  # (B, past + T)
        if key_mask is None and (prefix_len is None or T == 1):
            if not causal or T == 1:
                return None, False
            if past == 0:
                return None, True
        q_pos = torch.arange(past, past + T, device=device)[:, None]  # (T, 1) absolute query positions
        k_pos = torch.arange(past + T, device=device)[None, :]  # (1, past + T)
        allowed = k_pos <= q_pos if causal else \
            torch.ones(T, past + T, dtype=torch.bool, device=device)  # (T, past + T)
        if prefix_len is not None:
            allowed = allowed | (k_pos < prefix_len.to(device)[:, None, None])  # (B, T, past + T)
        if key_mask is not None:
            allowed = allowed & key_mask[:, None, :]  # (B, T, past + T)
        allowed = allowed | (k_pos == q_pos)  # a padded query attends to itself: no empty softmax row
        return allowed.view(-1, 1, T, past + T), False  # (B or 1, 1, T, past + T)
