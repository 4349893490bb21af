"""Tests of xling.model: masking, positions, language embeddings, padding, KV cache, parity with HF.

The reference here is an explicit float64 softmax-attention forward written from the equations,
plus Hugging Face GPT-2 and Llama with our weights copied in (the export families).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from xling.model import FAMILIES as EXPORT_FAMILIES
from xling.model import PRESETS, KVCache, ModelConfig, Transformer

V, N_LANGS = 300, 3
GPT2_LIKE, LLAMA_LIKE = EXPORT_FAMILIES["gpt2"], EXPORT_FAMILIES["llama"]
# the two export families and a mix of them, so every option is exercised
FAMILIES = {"gpt2": GPT2_LIKE, "llama": LLAMA_LIKE, "rope+layernorm+gelu": dict(GPT2_LIKE, pos="rope")}


pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)


def make(seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig.preset("tiny", vocab_size=V, **{"n_langs": N_LANGS, **kw})
    model = Transformer(cfg).eval()
    # init puts biases at zero and norms at one, and its small q/k weights make attention nearly
    # uniform: randomise so the tests see every parameter and peaked attention
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
            if name.endswith("c_attn.weight"):
                p.normal_(0.0, 0.2)
    return model


def ids(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(5, V, shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ an explicit reference forward

def reference_forward(model: Transformer, idx, causal, positions=None, lang_ids=None, pad_mask=None):
    """The model's maths written out in float64: softmax(q k^T / sqrt(hs) + mask) v, per head."""
    cfg = model.cfg
    P = {k: v.detach().double() for k, v in model.named_parameters()}
    B, T = idx.shape
    H, hs = cfg.n_head, cfg.head_dim
    pos = positions if positions is not None else torch.arange(T).expand(B, T)
    x = P["wte.weight"][idx]
    if cfg.pos == "learned":
        x = x + P["wpe.weight"][pos]
    if cfg.n_langs and lang_ids is not None:
        x = x + P["lang_emb.weight"][lang_ids]
    allowed = torch.ones(B, T, T, dtype=torch.bool)
    if causal:
        allowed &= torch.ones(T, T).tril().bool()
    if pad_mask is not None:
        allowed &= pad_mask[:, None, :]

    def norm(h, name):
        if cfg.norm == "rmsnorm":
            return h / torch.sqrt((h * h).mean(-1, keepdim=True) + cfg.norm_eps) * P[name + ".weight"]
        mu, var = h.mean(-1, keepdim=True), h.var(-1, keepdim=True, unbiased=False)
        return (h - mu) / torch.sqrt(var + cfg.norm_eps) * P[name + ".weight"] + P.get(name + ".bias", 0)

    def linear(h, name):
        return h @ P[name + ".weight"].T + P.get(name + ".bias", 0)

    def rotate(t):  # rotate each pair (i, i + hs/2) by the angle pos * theta^(-2i/hs)
        i = torch.arange(hs // 2, dtype=torch.float64)
        angle = pos[:, None, :, None].double() * cfg.rope_theta ** (-2 * i / hs)  # (B, 1, T, hs/2)
        a, b = t[..., : hs // 2], t[..., hs // 2:]
        return torch.cat([a * angle.cos() - b * angle.sin(), b * angle.cos() + a * angle.sin()], -1)

    for layer in range(cfg.n_layer):
        p = f"blocks.{layer}."
        q, k, v = linear(norm(x, p + "ln_1"), p + "attn.c_attn").split(cfg.d_model, -1)
        q, k, v = (t.view(B, T, H, hs).transpose(1, 2) for t in (q, k, v))
        if cfg.pos == "rope":
            q, k = rotate(q), rotate(k)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(hs)).masked_fill(~allowed[:, None], -1e30)
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, cfg.d_model)
        x = x + linear(y, p + "attn.c_proj")
        h = linear(norm(x, p + "ln_2"), p + "mlp.c_fc")
        if cfg.mlp == "swiglu":
            gate, up = h.chunk(2, -1)
            h = gate * torch.sigmoid(gate) * up
        else:
            h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
        x = x + linear(h, p + "mlp.c_proj")
    return norm(x, "ln_f")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_path_equals_explicit_softmax_attention(family, causal, padded):
    model = make(**FAMILIES[family])
    idx = ids(3, 12)
    lang = torch.tensor([0, 1, 2])[:, None].expand(3, 12)
    pad = None
    if padded:  # right padding (lengths 12, 7, 3), plus a left-padded row for the bidirectional case
        pad = torch.arange(12)[None] < torch.tensor([12, 7, 3])[:, None]
        if not causal:
            pad[2] = torch.arange(12) >= 4
    want = reference_forward(model, idx, causal, lang_ids=lang, pad_mask=pad)
    real = pad if pad is not None else torch.ones(3, 12, dtype=torch.bool)
    # SDPA's default CPU kernel, and the math backend recommended under torch.compile
    for backend in (None, SDPBackend.MATH):
        with sdpa_kernel(backend) if backend else contextlib.nullcontext():
            got = model(idx, causal=causal, lang_ids=lang, pad_mask=pad)
        err = (got[real].double() - want[real]).abs().max()
        assert err < 1e-5, (backend, err)


# ------------------------------------------------------------------ masking

@pytest.mark.parametrize("family", FAMILIES)
def test_causal_output_does_not_depend_on_future_tokens(family):
    model = make(**FAMILIES[family])
    a = ids(2, 10)
    b = a.clone()
    b[:, 6] = (b[:, 6] + 1) % V  # change token 6
    ha, hb = model(a), model(b)
    la, lb = model.lm_head(ha), model.lm_head(hb)
    assert torch.equal(ha[:, :6], hb[:, :6]) and torch.equal(la[:, :6], lb[:, :6])
    assert (ha[:, 6:] - hb[:, 6:]).abs().amax(-1).min() > 1e-4  # every later position sees the change


@pytest.mark.parametrize("family", FAMILIES)
def test_bidirectional_output_sees_both_sides(family):
    model = make(**FAMILIES[family])
    a = ids(2, 10)
    b = a.clone()
    b[:, 6] = (b[:, 6] + 1) % V
    ha, hb = model(a, causal=False), model(b, causal=False)
    assert (ha - hb).abs().amax(-1).min() > 1e-4  # positions 0..5 changed too


# ------------------------------------------------------------------ padding

@pytest.mark.parametrize("family", FAMILIES)
def test_real_positions_ignore_padding_and_match_unpadded_sequences(family):
    model = make(**FAMILIES[family])
    lengths = [9, 5, 2]
    seqs = [ids(1, n, seed=10 + n) for n in lengths]
    T = max(lengths)
    right = torch.arange(T)[None] < torch.tensor(lengths)[:, None]  # (3, T) True = real
    for causal in (True, False):
        outs = []
        for filler in (0, 7):  # two different paddings
            idx = torch.full((3, T), filler)
            for i, s in enumerate(seqs):
                idx[i, : lengths[i]] = s[0]
            outs.append(model(idx, causal=causal, pad_mask=right))
        for i, s in enumerate(seqs):
            alone = model(s, causal=causal)[0]  # (n, D) the sequence without any padding
            assert torch.allclose(outs[0][i, : lengths[i]], alone, atol=1e-5)
            assert torch.allclose(outs[1][i, : lengths[i]], alone, atol=1e-5)
    # left padding: positions count real tokens from 0, so the result equals the unpadded sequence
    left = right.flip(1)
    idx = torch.full((3, T), 0)
    for i, s in enumerate(seqs):
        idx[i, T - lengths[i]:] = s[0]
    positions = (left.cumsum(1) - 1).clamp(min=0)
    for causal in (True, False):
        out = model(idx, causal=causal, positions=positions, pad_mask=left)
        assert torch.isfinite(out).all()  # fully padded query rows give no NaN
        for i, s in enumerate(seqs):
            assert torch.allclose(out[i, T - lengths[i]:], model(s, causal=causal)[0], atol=1e-5)


# ------------------------------------------------------------------ positions

@pytest.mark.parametrize("family", FAMILIES)
def test_positions_reset_per_segment(family):
    model = make(**FAMILIES[family])
    x, y = ids(2, 6, seed=3), ids(2, 4, seed=4)
    xy = torch.cat([x, y], 1)
    reset = torch.cat([torch.arange(6), torch.arange(4)])[None].expand(2, 10)
    default = model(xy)
    assert torch.equal(default, model(xy, positions=torch.arange(10)[None].expand(2, 10)))
    h = model(xy, positions=reset)
    assert torch.allclose(h[:, :6], model(x), atol=1e-6)  # the first segment is unchanged
    assert (h[:, 6:] - default[:, 6:]).abs().max() > 1e-3  # the second one sees its new positions
    # the same, encoded segment by segment with explicit positions through the KV cache
    cache = KVCache()
    first = model(x, kv_cache=cache)
    second = model(y, positions=torch.arange(4)[None].expand(2, 4), kv_cache=cache)
    assert torch.allclose(torch.cat([first, second], 1), h, atol=1e-5)
    # and bidirectionally (TLM), against the reference
    hb = model(xy, causal=False, positions=reset)
    assert torch.allclose(hb.double(), reference_forward(model, xy, False, positions=reset), atol=1e-5)


def test_rope_is_relative_learned_is_absolute():
    idx = ids(2, 8)
    shifted = torch.arange(8)[None].expand(2, 8) + 20
    rope, learned = make(**LLAMA_LIKE), make(**GPT2_LIKE)
    assert torch.allclose(rope(idx), rope(idx, positions=shifted), atol=1e-5)
    assert (learned(idx) - learned(idx, positions=shifted)).abs().max() > 1e-3


# ------------------------------------------------------------------ language embeddings

def test_language_embeddings_only_when_enabled_and_given():
    idx = ids(2, 8)
    fr = torch.full((2, 8), 1)
    on = make(n_langs=N_LANGS)
    assert (on(idx, lang_ids=fr) - on(idx)).abs().max() > 1e-3
    assert (on(idx, lang_ids=fr) - on(idx, lang_ids=torch.full((2, 8), 2))).abs().max() > 1e-3
    # lang_ids=None adds nothing: the same weights without language embeddings give the same output
    off = Transformer(ModelConfig.preset("tiny", vocab_size=V, n_langs=0)).eval()
    missing, unexpected = off.load_state_dict(on.state_dict(), strict=False)
    assert missing == [] and unexpected == ["lang_emb.weight"]
    assert torch.equal(on(idx), off(idx))
    # with n_langs == 0, lang_ids are ignored (objectives may always pass them)
    assert torch.equal(off(idx, lang_ids=fr), off(idx))
    assert off.lang_emb is None and on.lang_emb.weight.shape == (N_LANGS, 32)


# ------------------------------------------------------------------ KV cache

@pytest.mark.parametrize("family", FAMILIES)
def test_kv_cache_decoding_equals_full_pass(family):
    model = make(**FAMILIES[family])
    idx = ids(2, 10)
    full = model(idx)
    cache = KVCache()
    steps = [model(idx[:, :4], kv_cache=cache)]  # a prompt of 4, then one token at a time
    steps += [model(idx[:, t:t + 1], kv_cache=cache) for t in range(4, 8)]
    steps.append(model(idx[:, 8:], kv_cache=cache))  # a chunk of 2 after single tokens
    assert len(cache) == 10
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
    # a left-padded prompt batch, decoded with explicit positions, equals each row decoded alone
    pad = torch.tensor([[False, False, True, True], [True, True, True, True]])
    prompt = idx[:, :4].clone()
    prompt[0, :2] = 0
    cache = KVCache()
    out = [model(prompt, positions=torch.tensor([[0, 0, 0, 1], [0, 1, 2, 3]]), pad_mask=pad, kv_cache=cache)]
    out.append(model(idx[:, 4:5], positions=torch.tensor([[2], [4]]), kv_cache=cache))
    assert cache.key_mask.shape == (2, 5)
    alone0 = model(torch.cat([idx[:1, 2:4], idx[:1, 4:5]], 1))
    alone1 = model(idx[1:, :5])
    assert torch.allclose(out[1][0], alone0[0, -1:], atol=1e-5)
    assert torch.allclose(out[1][1], alone1[0, -1:], atol=1e-5)
    # beam search: reordering the cache rows equals decoding the reordered batch
    rows = torch.tensor([1, 1, 0])
    cache.reorder(rows)
    step = model(idx[rows, 5:6], positions=torch.tensor([[3], [5]])[rows], kv_cache=cache)
    assert torch.allclose(step[0], model(idx[1:, :6])[0, -1:], atol=1e-5) and torch.equal(step[1], step[0])
    assert torch.allclose(step[2], model(idx[:1, 2:6])[0, -1:], atol=1e-5)
    with pytest.raises(ValueError, match="causal"):
        model(idx, causal=False, kv_cache=KVCache())



@pytest.mark.parametrize("family", list(FAMILIES))
def test_prefix_lm_reads_the_prefix_bidirectionally_and_the_rest_causally(family):
    model = make(**FAMILIES[family])
    idx = ids(2, 10)
    assert torch.allclose(model(idx, prefix_len=torch.tensor([0, 0])), model(idx), atol=1e-6)
    assert torch.allclose(model(idx, prefix_len=torch.tensor([10, 10])), model(idx, causal=False), atol=1e-5)
    out = model(idx, prefix_len=torch.tensor([4, 6]))  # (2, 10, D)
    for r, p in enumerate((4, 6)):
        # the prefix is a bidirectional pass over itself; a later position changes nothing before it
        assert torch.allclose(out[r, :p], model(idx[r:r + 1, :p], causal=False)[0], atol=1e-5)
        later = idx[r:r + 1].clone()
        later[0, 8] = (later[0, 8] + 1) % model.cfg.vocab_size
        again = model(later, prefix_len=torch.tensor([p]))[0]
        assert torch.allclose(again[:8], out[r, :8], atol=1e-6) and not torch.allclose(again[8:], out[r, 8:])
    # decoding after a prefix-LM prompt (left-padded, cached) equals the full prefix-LM pass
    cache, pad = KVCache(), torch.tensor([[False, True, True, True, True], [True] * 5])
    prompt = idx[:, :5].clone()
    prompt[0, 0] = 0
    first = model(prompt, positions=torch.tensor([[0, 0, 1, 2, 3], [0, 1, 2, 3, 4]]), pad_mask=pad,
                  kv_cache=cache, prefix_len=torch.tensor([1 + 3, 3]))  # row 0: 3 prefix tokens after 1 pad
    step = model(idx[:, 5:6], positions=torch.tensor([[4], [5]]), kv_cache=cache)
    row0 = model(idx[:1, 1:6], prefix_len=torch.tensor([3]))
    row1 = model(idx[1:, :6], prefix_len=torch.tensor([3]))
    assert torch.allclose(first[0, 1:], row0[0, :4], atol=1e-5) and torch.allclose(step[0], row0[0, 4:], atol=1e-5)
    assert torch.allclose(first[1], row1[0, :5], atol=1e-5) and torch.allclose(step[1], row1[0, 5:], atol=1e-5)
    with pytest.raises(ValueError, match="causal"):
        model(idx, causal=False, prefix_len=torch.tensor([2, 2]))

# ------------------------------------------------------------------ weights, sizes, config

def test_weight_tying():
    model = make()
    h = model(ids(2, 5))
    assert torch.equal(model.lm_head(h), h @ model.wte.weight.T)
    assert not any("head" in name for name in model.state_dict())  # one matrix, saved once
    model.lm_head(h).sum().backward()
    assert model.wte.weight.grad is not None and model.wte.weight.grad.abs().sum() > 0


def test_untied_output_layer():
    model = make(tie_embeddings=False)
    h = model(ids(2, 5))
    assert torch.equal(model.lm_head(h), h @ model.lm_out.weight.T)
    assert model.num_params() == make().num_params() + V * 32  # one more (V, D) matrix
    model.lm_head(h[:, -1]).sum().backward()  # the output layer's gradient reaches wte only through the input
    assert model.lm_out.weight.grad.abs().sum() > 0
    x = ids(2, 5)
    model.zero_grad()
    model.lm_head(model(x)).sum().backward()
    touched = x.unique()
    others = torch.ones(V, dtype=torch.bool)
    others[touched] = False
    assert model.wte.weight.grad[others].abs().sum() == 0  # rows of tokens not in the input get no gradient


def expected_params(cfg: ModelConfig) -> int:
    d, F_, L, b = cfg.d_model, cfg.ff_dim, cfg.n_layer, int(cfg.bias)
    norm = d * (2 if cfg.norm == "layernorm" and cfg.bias else 1)
    attn = d * 3 * d + b * 3 * d + d * d + b * d
    mlp = (2 if cfg.mlp == "swiglu" else 1) * (d * F_ + b * F_) + F_ * d + b * d
    pos = cfg.block_size * d if cfg.pos == "learned" else 0
    return cfg.vocab_size * d + pos + cfg.n_langs * d + L * (attn + mlp + 2 * norm) + norm


@pytest.mark.parametrize("family", FAMILIES)
def test_parameter_count(family):
    for n_langs in (0, N_LANGS):
        model = make(n_langs=n_langs, **FAMILIES[family])
        assert model.num_params() == expected_params(model.cfg)
        emb = V * 32 + (64 * 32 if model.wpe is not None else 0) + n_langs * 32
        assert model.num_params(exclude_embeddings=True) == model.num_params() - emb
    # by hand: tiny, vocab 300, block 64, 3 languages; GPT-2-like, then the default (Llama, ff 96)
    assert make(**GPT2_LIKE).num_params() == 300 * 32 + 64 * 32 + 3 * 32 + 2 * (
        32 * 96 + 96 + 32 * 32 + 32 + 32 * 128 + 128 + 128 * 32 + 32 + 4 * 32) + 2 * 32
    assert make().num_params() == 300 * 32 + 3 * 32 + 2 * (
        32 * 96 + 32 * 32 + 32 * 192 + 96 * 32 + 2 * 32) + 32
    # the formula gives GPT-2 small's well-known count (building that model here would take seconds)
    gpt2_small = ModelConfig(vocab_size=50257, block_size=1024, n_layer=12, d_model=768, n_head=12,
                             **GPT2_LIKE)
    assert expected_params(gpt2_small) == 124_439_808


def test_presets_and_validation():
    default = ModelConfig()
    assert {k: getattr(default, k) for k in LLAMA_LIKE} == LLAMA_LIKE  # the measured default
    assert (PRESETS["tiny"]["n_layer"], PRESETS["tiny"]["d_model"]) == (2, 32)
    small = ModelConfig.preset("small", vocab_size=8000)
    assert (small.n_layer, small.d_model, small.n_head) == (4, 256, 4)
    base = ModelConfig.preset("base")
    assert (base.n_layer, base.d_model) == (12, 768)
    with pytest.raises(ValueError, match="divisible by n_head"):
        ModelConfig(d_model=100, n_head=3)
    with pytest.raises(ValueError, match="unknown model size"):
        ModelConfig.preset("huge")
    for bad in (dict(pos="alibi"), dict(norm="batchnorm"), dict(mlp="relu"), dict(dropout=1.0),
                dict(n_langs=-1), dict(vocab_size=0)):
        with pytest.raises(ValueError):
            ModelConfig(**bad)
    model = make()
    with pytest.raises(ValueError, match="block_size"):
        model(ids(1, 65))


def test_init_scales():
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("small", vocab_size=8000, n_langs=4, **GPT2_LIKE))
    assert abs(model.wte.weight.std().item() - 0.02) < 0.001
    assert abs(model.blocks[0].attn.c_attn.weight.std().item() - 0.02) < 0.001
    resid = 0.02 / math.sqrt(2 * 4)
    assert abs(model.blocks[0].mlp.c_proj.weight.std().item() - resid) < 0.0005
    assert abs(model.blocks[3].attn.c_proj.weight.std().item() - resid) < 0.0005
    assert model.blocks[0].attn.c_attn.bias.abs().max() == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_states_layers(family):
    model = make(**FAMILIES[family])
    idx = ids(2, 7)
    hs = model.hidden_states(idx, causal=False)
    assert len(hs) == model.cfg.n_layer + 1 and all(h.shape == (2, 7, 32) for h in hs)
    assert torch.equal(hs[-1], model(idx, causal=False))
    first = model.wte(idx) + (model.wpe.weight[:7] if model.wpe is not None else 0)
    assert torch.allclose(hs[0], first)
    # [1] is the raw residual stream after block 0: a one-block copy's output is ln_f of it
    one = Transformer(dataclasses.replace(model.cfg, n_layer=1)).eval()
    one.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("blocks.1.")})
    assert torch.allclose(model.ln_f(hs[1]), one(idx, causal=False), atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_autocast_close_to_fp32(family):
    # rope must not promote q/k to fp32 under autocast (SDPA needs one dtype); the residual stream
    # and the norms stay fp32, so the output is fp32
    model = make(**FAMILIES[family])
    idx = ids(2, 16)
    for pad in (None, torch.ones(2, 16, dtype=torch.bool)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = model(idx, pad_mask=pad)
        assert h.dtype == torch.float32
        assert (h - model(idx)).abs().max() < 0.1


# ------------------------------------------------------------------ parity with Hugging Face

def test_gpt2_parity():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = make(n_langs=0, **GPT2_LIKE)
    c = model.cfg
    hf = GPT2LMHeadModel(GPT2Config(
        vocab_size=V, n_positions=c.block_size, n_embd=c.d_model, n_layer=c.n_layer, n_head=c.n_head,
        activation_function="gelu_new", layer_norm_epsilon=c.norm_eps, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, tie_word_embeddings=True)).eval()
    sd = {}
    for k, v in model.state_dict().items():  # the export mapping: Conv1D weights are (in, out)
        name = "transformer." + k.replace("blocks.", "h.")
        sd[name] = v.T if k.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) else v
    sd["lm_head.weight"] = model.wte.weight
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected and all(".attn.bias" in m or "masked_bias" in m for m in missing), missing
    idx = ids(2, 16)
    with torch.no_grad():
        out = hf(input_ids=idx, output_hidden_states=True)
        ours = model.lm_head(model(idx))
        assert (out.logits - ours).abs().max() < 1e-4
        for a, b in zip(out.hidden_states, model.hidden_states(idx), strict=True):
            assert (a - b).abs().max() < 1e-5
        # right padding with HF's attention_mask: real positions agree
        pad = torch.arange(16)[None] < torch.tensor([16, 9])[:, None]
        hf_pad = hf(input_ids=idx, attention_mask=pad.long()).logits
        ours_pad = model.lm_head(model(idx, pad_mask=pad))
        assert (hf_pad[pad] - ours_pad[pad]).abs().max() < 1e-4


def test_llama_parity():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = make(n_langs=0)  # the default config is the Llama family
    c = model.cfg
    hf = LlamaForCausalLM(LlamaConfig(
        vocab_size=V, hidden_size=c.d_model, intermediate_size=c.ff_dim, num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head, num_key_value_heads=c.n_head, max_position_embeddings=c.block_size,
        rms_norm_eps=c.norm_eps, rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
        hidden_act="silu", attention_bias=False, mlp_bias=False, tie_word_embeddings=True)).eval()
    sd = {"model.embed_tokens.weight": model.wte.weight, "model.norm.weight": model.ln_f.weight,
          "lm_head.weight": model.wte.weight}
    for i, b in enumerate(model.blocks):
        p = f"model.layers.{i}."
        q, k, v = b.attn.c_attn.weight.split(c.d_model, 0)
        gate, up = b.mlp.c_fc.weight.chunk(2, 0)
        sd.update({p + "input_layernorm.weight": b.ln_1.weight,
                   p + "post_attention_layernorm.weight": b.ln_2.weight,
                   p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k,
                   p + "self_attn.v_proj.weight": v, p + "self_attn.o_proj.weight": b.attn.c_proj.weight,
                   p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up,
                   p + "mlp.down_proj.weight": b.mlp.c_proj.weight})
    hf.load_state_dict(sd, strict=True)
    idx = ids(2, 16)
    with torch.no_grad():
        assert (hf(input_ids=idx).logits - model.lm_head(model(idx))).abs().max() < 1e-4


def test_cross_entropy_starts_near_uniform():
    # std 0.02 init with a tied head: the first loss is close to log(V), not far above it (PERF.md)
    model = make(n_langs=0)
    idx = ids(4, 32)
    loss = F.cross_entropy(model.lm_head(model(idx[:, :-1])).flatten(0, 1), idx[:, 1:].flatten())
    assert abs(loss.item() - math.log(V)) < 0.1
