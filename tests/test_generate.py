"""Tests of xling.generate: KV-cache decoding, sampling filters, stops, language control, beam search,
streaming, and greedy parity with Hugging Face GPT-2 `generate` on the same weights.

References: full recomputation without a cache (greedy), each prompt alone (batching), hand-computed
filter results (top-k, top-p, CTRL penalty), brute-force enumeration (beam search), and
`transformers.GPT2LMHeadModel.generate`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

from tests.conftest import TINY
from xling.checkpoint import load_run
from xling.decode import _LM
from xling.detokenize import IncrementalDecoder, decode_continuation
from xling.errors import XlingError
from xling.generate import (
    GenerateConfig,
    Hypothesis,
    apply_repetition_penalty,
    beam_search,
    encode_prompts,
    generate,
    generate_ids,
    lm_beam_search,
    no_repeat_ngram,
    stream,
    stream_steps,
    top_k_filter,
    top_p_filter,
)
from xling.langvocab import LangVocab
from xling.model import FAMILIES, KVCache, ModelConfig, Transformer
from xling.precision import for_precision
from xling.tokenizer import EOS_ID, TokenizerConfig, build_tokenizer

V = 300
LANGS = list(TINY)  # en, fr, ru: tags <en>=5, <fr>=6, <ru>=7
GREEDY = GenerateConfig(max_new_tokens=12, temperature=0.0, precision="fp32", stop_tokens=[])


pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)


def make(seed: int = 0, n_langs: int = 3, tok=None, **kw) -> Transformer:
    """A tiny random model; with `tok`, its vocabulary is the tokenizer's."""
    torch.manual_seed(seed)
    vocab = V if tok is None else tok.get_vocab_size()
    model = Transformer(ModelConfig.preset("tiny", vocab_size=vocab, n_langs=n_langs, **kw)).eval()
    # larger weights than the init's std 0.02: peaked next-token distributions and attention, so the
    # tests see real choices rather than near-ties
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
            elif p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model


def train_tok(kind: str):
    texts = [t for verses in TINY.values() for t in verses] * 3
    return build_tokenizer(texts, TokenizerConfig(kind=kind, vocab_size=V), LANGS)


@pytest.fixture(scope="module")
def tok():
    return train_tok("bpe")  # with byte-fallback pieces <0xNN>


@pytest.fixture(scope="module")
def toks(tok):
    return {"bpe": tok, "bytelevel-bpe": train_tok("bytelevel-bpe")}


def prompts(n: int, seed: int = 3, lo: int = 2, hi: int = 9) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(lo, hi, (n,), generator=g).tolist()
    return [torch.randint(5, V, (k,), generator=g).tolist() for k in lens]


def greedy_without_cache(model: Transformer, prompt: list[int], n: int, lang: int | None) -> list[int]:
    """The reference: recompute the whole sequence every step and take the argmax of the last position."""
    x = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(n):
            lang_ids = None if lang is None else torch.full_like(x, lang)
            nxt = model.lm_head(model(x, lang_ids=lang_ids))[0, -1].argmax()
            x = torch.cat([x, nxt.view(1, 1)], dim=1)
    return x[0, len(prompt):].tolist()


# ---------------------------------------------------------------------------- decoding

@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("family", FAMILIES)
def test_kv_cache_greedy_equals_full_recompute(family, tie):
    model = make(tie_embeddings=tie, **FAMILIES[family])  # untied: the decoding step reads lm_out, not wte
    for i, p in enumerate(prompts(3)):
        got = generate_ids(model, [p], GREEDY, lang_index=[i])[0]
        assert got == greedy_without_cache(model, p, GREEDY.max_new_tokens, i)
    # without language ids too
    p = prompts(1, seed=9)[0]
    assert generate_ids(model, [p], GREEDY)[0] == greedy_without_cache(model, p, GREEDY.max_new_tokens, None)


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_prompts_of_different_lengths_equal_each_alone(family):
    model = make(**FAMILIES[family])
    ps = prompts(5, lo=1, hi=12)
    assert len({len(p) for p in ps}) > 1
    langs = [0, 1, 2, 1, 0]
    batched = generate_ids(model, ps, GREEDY, lang_index=langs)
    alone = [generate_ids(model, [p], GREEDY, lang_index=[lg])[0] for p, lg in zip(ps, langs, strict=True)]
    assert batched == alone
    # and with a stop token that ends rows at different steps: each row is cut where it would be alone
    stop = [batched[0][3]]
    cut = generate_ids(model, ps, GREEDY, lang_index=langs, stop_ids=stop)
    for row, full in zip(cut, batched, strict=True):
        end = full.index(stop[0]) if stop[0] in full else len(full)
        assert row == full[:end]
    assert cut[0] == batched[0][:batched[0].index(stop[0])]


@pytest.mark.parametrize("family", FAMILIES)
def test_decode_step_equals_the_models_cached_forward(family):
    """_LM.step (the lean decoding maths, static fp32 cache) gives the logits of model(..., kv_cache)."""
    model = make(**FAMILIES[family])
    ps, langs = prompts(3, lo=2, hi=7), [0, 2, 1]
    lm = _LM(model, ps, langs, max_new=6)
    T0 = max(len(p) for p in ps)
    full = torch.tensor([[0] * (T0 - len(p)) + p for p in ps])  # (B, T0) left-padded like _LM
    real = full != 0
    pos = (real.long().cumsum(1) - 1).clamp(min=0)
    lang = torch.tensor(langs)[:, None]
    cache = KVCache()
    with torch.no_grad():
        ref = model.lm_head(model(full, positions=pos, pad_mask=real, lang_ids=lang.expand_as(full),
                                  kv_cache=cache))[:, -1]
        torch.testing.assert_close(lm.logits, ref, rtol=1e-5, atol=1e-5)
        nxt_pos = pos[:, -1:] + 1
        for _ in range(5):
            tok = ref.argmax(-1)
            got = lm.step(tok)
            ref = model.lm_head(model(tok[:, None], positions=nxt_pos, lang_ids=lang, kv_cache=cache))[:, -1]
            nxt_pos = nxt_pos + 1
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="capacity"):
        lm.step(tok)  # 1 prompt token + max_new=6 -> 5 further tokens fit


def test_decode_sees_weights_changed_in_place():
    model = make()
    p = prompts(1, seed=9)[0]
    before = generate_ids(model, [p], GREEDY)[0]
    with torch.no_grad():
        model.blocks[0].mlp.c_fc.weight.mul_(-1.0)  # same tensor, new version: prepared copies are stale
    after = generate_ids(model, [p], GREEDY)[0]
    assert after == greedy_without_cache(model, p, GREEDY.max_new_tokens, None)
    assert after != before


def test_bf16_decoding_stays_close_to_the_models_bf16_forward():
    model = for_precision(make(), "bf16")
    p = prompts(1, seed=4)[0]
    lm = _LM(model, [p], None, max_new=4)
    x = torch.tensor([p])
    with torch.no_grad():
        tok = lm.logits.argmax(-1)
        got = lm.step(tok)  # attention in fp32 over the fp32 cache, weights bf16
        want = model.lm_head(model(torch.cat([x, tok[:, None]], 1)))[:, -1].float()
    assert got.dtype == torch.float32
    assert (got - want).abs().max() < 0.05 * want.abs().max()


def test_sampling_is_reproducible_with_a_seed():
    model = make()
    ps = prompts(3)
    cfg = GenerateConfig(max_new_tokens=20, temperature=1.0, top_p=1.0, seed=7, precision="fp32")
    a = generate_ids(model, ps, cfg)
    assert a == generate_ids(model, ps, cfg)
    other = generate_ids(model, ps, GenerateConfig(**{**cfg.__dict__, "seed": 8}))
    assert other != a
    assert a != generate_ids(model, ps, GREEDY.__class__(max_new_tokens=20, temperature=0.0))  # it sampled


def test_top_k_1_equals_greedy():
    model = make()
    ps = prompts(4)
    cfg = GenerateConfig(max_new_tokens=12, temperature=1.5, top_k=1, top_p=1.0, seed=3, stop_tokens=[])
    assert generate_ids(model, ps, cfg) == generate_ids(model, ps, GREEDY)


def test_generation_stops_at_block_size():
    model = make()  # block_size 64
    p = prompts(1, lo=60, hi=61)[0]
    out = generate_ids(model, [p], GenerateConfig(max_new_tokens=50, temperature=0.0))[0]
    assert len(out) == 64 - 60 + 1  # the last chosen token is never fed back
    with pytest.raises(XlingError, match="block_size"):
        generate_ids(model, [list(range(5, 70))], GREEDY)


# ---------------------------------------------------------------------------- logits processors

def test_top_p_keeps_the_smallest_set_with_enough_mass():
    probs = torch.tensor([[0.125, 0.5, 0.0625, 0.25, 0.0625]])
    logits = probs.log()
    kept = lambda p: (top_p_filter(logits, p) > -math.inf)[0].tolist()  # noqa: E731
    assert kept(0.4) == [False, True, False, False, False]
    assert kept(0.7) == [False, True, False, True, False]
    assert kept(0.8) == [True, True, False, True, False]
    assert kept(0.95) == [True, True, True, True, True]  # the two 0.0625 tie: both needed past 0.9375
    assert kept(1.0) == [True] * 5
    # invariant on random distributions: the kept set has mass >= p, and without its least likely
    # token it would not
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 40, generator=g) * 2
    for p in (0.1, 0.5, 0.9):
        keep = top_p_filter(logits, p) > -math.inf
        probs = logits.softmax(-1)
        for row, k in zip(probs, keep, strict=True):
            mass = row[k].sum()
            assert mass >= p - 1e-6
            assert mass - row[k].min() < p + 1e-6
            assert row[k].min() >= row[~k].max() if (~k).any() else True


def test_top_k_filter():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    assert top_k_filter(logits, 2).tolist() == [[-math.inf, 5.0, -math.inf, 4.0, -math.inf]]
    assert torch.equal(top_k_filter(logits, 0), logits)


def test_repetition_penalty_is_ctrl():
    logits = torch.tensor([[2.0, -2.0, 3.0, -1.0]])
    seen = torch.tensor([[True, True, False, False]])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -4.0, 3.0, -1.0]]
    # in decoding: with a strong penalty greedy never repeats a token of the prompt or of its output
    model = make()
    p = prompts(1, seed=5)[0]
    cfg = GenerateConfig(max_new_tokens=20, temperature=0.0)
    out = generate_ids(model, [p], GenerateConfig(**{**cfg.__dict__, "repetition_penalty": 1e6}))[0]
    plain = generate_ids(model, [p], cfg)[0]
    assert len(set(out)) == len(out) and not set(out) & set(p)
    assert len(set(plain + p)) < len(plain + p)  # without it, this prompt does repeat


# ---------------------------------------------------------------------------- text, stops, language

def test_language_tag_is_the_first_token_fed(tok):
    model = make(n_langs=3, tok=tok)
    seen = []
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: seen.append((args[0], kwargs["lang_ids"])),
                                           with_kwargs=True)
    try:
        generate(model, tok, ["Au commencement", "Свет"], lang=["fr", "ru"], cfg=GREEDY)
    finally:
        hook.remove()
    idx, lang_ids = seen[0]  # the prefill call
    fr, ru = tok.token_to_id("<fr>"), tok.token_to_id("<ru>")
    first_real = [row[row != 0][0].item() for row in idx]  # left padding (id 0) comes before the tag
    assert first_real == [fr, ru]
    assert (lang_ids[0] == 1).all() and (lang_ids[1] == 2).all()  # corpus order: en=0, fr=1, ru=2
    # only the prompt goes through model(); the steps run _decode, whose language ids
    # test_kv_cache_greedy_equals_full_recompute pins
    assert len(seen) == 1
    ids, index = encode_prompts(tok, ["Au commencement"], "fr")
    assert ids == [[fr] + tok.encode("Au commencement").ids] and index == [1]
    with pytest.raises(XlingError, match="<de>"):
        encode_prompts(tok, ["x"], "de")
    with pytest.raises(XlingError, match="empty prompt"):
        encode_prompts(tok, [""], None)


def test_generate_text_equals_decoded_ids(tok):
    model = make(tok=tok)
    out = generate(model, tok, ["In the beginning", "Свет во"], lang="en", cfg=GREEDY)
    ids, index = encode_prompts(tok, ["In the beginning", "Свет во"], "en")
    new = generate_ids(model, ids, GREEDY, lang_index=index)
    # prompt + output is the decoded whole: the continuation keeps its leading space ("beginning" + " was")
    want = [tok.decode(p + x, skip_special_tokens=True) for p, x in zip(ids, new, strict=True)]
    assert [p + o for p, o in zip(["In the beginning", "Свет во"], out, strict=True)] == want and all(out)


def test_min_new_tokens_holds_back_the_stop_tokens(tok):
    model = make(tok=tok)
    ids, index = encode_prompts(tok, ["In the beginning"], "en")
    first = generate_ids(model, ids, GREEDY, lang_index=index)[0][0]  # make greedy's first choice a stop token
    cfg = GenerateConfig(max_new_tokens=8, min_new_tokens=4, temperature=0.0, stop_tokens=[], precision="fp32")
    assert generate_ids(model, ids, GREEDY, lang_index=index, stop_ids=[first])[0] == []
    out = generate_ids(model, ids, cfg, lang_index=index, stop_ids=[first])[0]
    assert len(out) >= 4 and first not in out[:4]
    streamed = "".join(stream(model, tok, "In the beginning", "en",
                              GenerateConfig(**{**cfg.__dict__, "stop_tokens": [tok.id_to_token(first)]})))
    assert streamed == decode_continuation(tok, ids[0], out)
    with pytest.raises(ValueError, match="min_new_tokens"):
        GenerateConfig(max_new_tokens=3, min_new_tokens=4)


def test_continuation_keeps_its_leading_space(tok):
    prompt, new = tok.encode("In the").ids, tok.encode("In the beginning was").ids[len(tok.encode("In the").ids):]
    assert tok.decode(new) == "beginning was"  # alone, the decoder strips the first "▁"
    assert decode_continuation(tok, prompt, new) == " beginning was"
    dec = IncrementalDecoder(tok, prompt=prompt)
    assert "".join(dec.push(t) for t in new) + dec.flush() == " beginning was"


def test_stop_strings_and_stop_tokens_cut_the_output(tok):
    model = make(seed=1, tok=tok)
    cfg = GenerateConfig(max_new_tokens=30, temperature=0.0, stop_tokens=[], precision="fp32")
    full = generate(model, tok, ["In the beginning"], "en", cfg)[0]
    ids = generate_ids(model, encode_prompts(tok, ["In the beginning"], "en")[0], cfg, lang_index=[0])[0]
    assert len(full) > 10
    stop = full[6:9]
    cut = generate(model, tok, ["In the beginning"], "en",
                   GenerateConfig(**{**cfg.__dict__, "stop": [stop]}))[0]
    assert cut == full[:full.find(stop)]
    name = tok.id_to_token(ids[4])
    by_token = generate(model, tok, ["In the beginning"], "en",
                        GenerateConfig(**{**cfg.__dict__, "stop_tokens": [name]}))[0]
    prompt_ids = encode_prompts(tok, ["In the beginning"], "en")[0][0]
    assert by_token == decode_continuation(tok, prompt_ids, ids[:ids.index(ids[4])])
    with pytest.raises(XlingError, match="stop token"):
        generate(model, tok, ["x"], "en", GenerateConfig(stop_tokens=["<nope>"]))


@pytest.mark.parametrize("kind", ["bpe", "bytelevel-bpe"])
def test_streaming_pieces_concatenate_to_the_output(toks, kind):
    tok = toks[kind]
    model = make(seed=2, tok=tok)
    n_pieces = 0
    for cfg in (GenerateConfig(max_new_tokens=40, temperature=1.0, top_p=1.0, seed=4, precision="fp32"),
                GenerateConfig(max_new_tokens=40, temperature=1.0, top_p=1.0, seed=5, precision="fp32"),
                GenerateConfig(max_new_tokens=40, temperature=0.0, stop=["е"], precision="fp32")):
        for prompt, lang in (("Свет во тьме", "ru"), ("In the", "en")):
            pieces = list(stream(model, tok, prompt, lang, cfg))
            assert "".join(pieces) == generate(model, tok, [prompt], lang, cfg)[0]
            assert all(pieces) and not any(p.endswith("\ufffd") for p in pieces[:-1])
            n_pieces += len(pieces)
            # step by step: one item per generated token (the ids generate_ids chooses), the same text
            steps = list(stream_steps(model, tok, prompt, lang, cfg))
            assert "".join(s.text for s in steps) == "".join(pieces)
            if not cfg.stop:
                ids, index = encode_prompts(tok, [prompt], lang)
                want = generate_ids(model, ids, cfg, lang_index=index, stop_ids=[EOS_ID])[0]
                assert [s.token for s in steps if s.token is not None] == want
    assert n_pieces > 12  # it streamed: many pieces, not one block per output


def byte_token(tok, b: int) -> int:
    """The single-byte token of byte b: <0xNN> (byte fallback) or GPT-2's printable byte character."""
    i = tok.token_to_id(f"<0x{b:02X}>")
    if i is not None:
        return i
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [x for x in range(256) if x not in keep]  # the other bytes map to 256, 257, ... in order
    return tok.token_to_id(chr(b) if b in keep else chr(256 + moved.index(b)))


@pytest.mark.parametrize("kind", ["bpe", "bytelevel-bpe"])
def test_incremental_decoder_emits_only_complete_characters(toks, kind):
    tok = toks[kind]
    # single-byte tokens: the Cyrillic letters arrive one byte at a time
    text = "Свет мир!"
    singles = [byte_token(tok, b) for b in text.encode("utf-8")]
    assert None not in singles and len(singles) > len(text)
    assert tok.decode(singles[:1]) == "\ufffd"  # half a letter decodes to the replacement character
    dec = IncrementalDecoder(tok, stops=["!"])
    pieces = [dec.push(t) for t in singles] + [dec.flush()]
    assert "".join(pieces) == "Свет мир" and dec.stopped and dec.text == "Свет мир"
    if kind == "bytelevel-bpe":  # one whole character at a time, never a byte
        assert [p for p in pieces if p] == list("Свет мир")
    # valid bytes then a byte that breaks the run: the decoded prefix must not have been emitted too early
    ids = [byte_token(tok, b) for b in b"q$\xd1"] + tok.encode(" word").ids
    dec = IncrementalDecoder(tok)
    pieces = [dec.push(t) for t in ids] + [dec.flush()]
    assert "".join(pieces) == tok.decode(ids)
    dec = IncrementalDecoder(tok)
    pieces = [dec.push(t) for t in singles[:-3]]  # ends inside "р": the half letter comes only at flush
    assert "".join(pieces) + dec.flush() == tok.decode(singles[:-3])


def test_stop_string_split_across_pieces_is_never_emitted(tok):
    ids = tok.encode("In the beginning was").ids
    dec = IncrementalDecoder(tok, stops=["beginning"])
    out = "".join(dec.push(t) for t in ids) + dec.flush()
    assert out == "In the " and dec.stopped


def test_auto_precision_is_fp32_for_one_row_on_the_cpu(monkeypatch):
    import xling.precision as G

    monkeypatch.setattr(G, "native_bf16", lambda device: True)
    assert G.resolve_precision("auto", "cpu", 1) == torch.float32  # MKL fp32 gemv beats oneDNN bf16
    assert G.resolve_precision("auto", "cpu", G.AUTO_BF16_MIN_ROWS) == torch.bfloat16
    assert G.resolve_precision("auto", "cpu") == torch.bfloat16  # rows unknown: many
    assert G.resolve_precision("fp32", "cpu", 8) == torch.float32
    model = make()
    assert for_precision(model, "auto", 1) is model
    assert next(for_precision(model, "auto", 8).parameters()).dtype == torch.bfloat16
    monkeypatch.setattr(G, "native_bf16", lambda device: False)
    assert G.resolve_precision("auto", "cpu", 8) == torch.float32


def test_precision_copy(tok):
    model = make(tok=tok)
    bf = for_precision(model, "bf16")
    assert bf is not model and next(bf.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32
    assert for_precision(model, "fp32") is model
    assert torch.equal(bf.wte.weight, model.wte.weight.to(torch.bfloat16))
    cfg = GenerateConfig(max_new_tokens=8, temperature=0.0, precision="bf16")
    model.train()  # generation runs in eval mode and gives the mode back
    out = generate(model, tok, ["In the"], "en", cfg)
    ids, index = encode_prompts(tok, ["In the"], "en")
    assert out == [decode_continuation(tok, ids[0], generate_ids(bf, ids, cfg, lang_index=index,
                                                                 stop_ids=[EOS_ID])[0])]
    assert model.training and next(model.parameters()).dtype == torch.float32


def test_load_run_from_a_run_directory(tok, tmp_path):
    import dataclasses

    from xling.checkpoint import save_checkpoint
    from xling.tokenizer import tokenizer_hash

    model = make(tok=tok)
    (tmp_path / "tokenizer").mkdir()
    tok.save(str(tmp_path / "tokenizer" / "tokenizer.json"))
    sha = tokenizer_hash(tmp_path / "tokenizer")
    step_dir = save_checkpoint(tmp_path / "checkpoints", 5, model_state=model.state_dict(),
                               config={"model": dataclasses.asdict(model.cfg)}, tokenizer_sha256=sha)
    want = generate(model, tok, ["In the"], "en", GREEDY)
    for path in (tmp_path, tmp_path / "checkpoints", step_dir):
        m, t = load_run(path)
        assert generate(m, t, ["In the"], "en", GREEDY) == want
    other = tmp_path / "other"
    other.mkdir()
    (other / "tokenizer.json").write_text(tok.to_str().replace("<en>", "<xx>"), encoding="utf-8")
    with pytest.raises(XlingError, match="sha256"):
        load_run(tmp_path, tokenizer_dir=other)


def tiny_lang_vocab(tok) -> tuple[LangVocab, dict[str, set[int]]]:
    """Each TINY language's "training text" tokens: what `LangVocab.from_shards` counts, here from the strings."""
    seen = {lg: {i for t in TINY[lg] for i in tok.encode(t, add_special_tokens=False).ids} for lg in LANGS}
    V = tok.get_vocab_size()
    return LangVocab({lg: [i in ids for i in range(V)] for lg, ids in seen.items()}), seen


def test_lang_vocab_never_produces_a_token_outside_the_languages_training_text(tok):
    model = make(tok=tok)
    vocab, seen = tiny_lang_vocab(tok)
    eos = tok.token_to_id("</s>")
    # a hot, unfiltered sampler over a random model: without the mask it wanders over the whole vocabulary
    hot = GenerateConfig(max_new_tokens=20, temperature=2.0, top_p=1.0, precision="fp32", seed=0)
    on = dataclasses.replace(hot, lang_vocab=True)
    langs, texts = LANGS * 6, ["In the", "Au commencement", "Свет во"] * 6  # en fr ru, six times
    ids, index = encode_prompts(tok, texts, langs)
    stop = [eos]
    free = generate_ids(model, ids, hot, lang_index=index, stop_ids=stop)
    assert any(t not in seen[lg] for lg, out in zip(langs, free, strict=True) for t in out)  # the test can fail
    for cfg in (on, dataclasses.replace(on, temperature=0.0), dataclasses.replace(on, num_beams=3)):
        for seed in range(3):
            cfg = dataclasses.replace(cfg, seed=seed)
            allowed = vocab.mask(langs, model.cfg.vocab_size, always=stop)
            out = generate_ids(model, ids, cfg, lang_index=index, stop_ids=stop, allowed=allowed)
            assert all(t in seen[lg] for lg, o in zip(langs, out, strict=True) for t in o), cfg
            assert sum(map(len, out)) > 0
    # the text API: generate() and stream() take the vocabulary; off or without one, nothing is restricted
    assert generate(model, tok, texts[:3], LANGS, on, vocab=vocab) == [
        decode_continuation(tok, p, o) for p, o in zip(ids[:3], generate_ids(
            model, ids[:3], on, lang_index=index[:3], stop_ids=stop,
            allowed=vocab.mask(LANGS, model.cfg.vocab_size, stop)), strict=True)]
    assert generate(model, tok, texts[:3], LANGS, hot, vocab=vocab) == generate(model, tok, texts[:3], LANGS, hot)
    assert "".join(stream(model, tok, "Свет во", "ru", on, vocab=vocab)) == generate(
        model, tok, ["Свет во"], "ru", on, vocab=vocab)[0]
    with pytest.raises(XlingError, match="no training text for de"):
        vocab.mask(["de"], model.cfg.vocab_size)


def test_lang_vocab_from_shards_counts_the_train_split():
    class FakeShards:
        langs, vocab_size = ["en", "ru"], 8

        def tokens(self, split, lang):
            assert split == "train"
            return np.array({"en": [5, 6, 6], "ru": [7]}[lang], dtype=np.uint16)

    vocab = LangVocab.from_shards(FakeShards(), ["ru", "de"])  # de is not in the shards: left out
    assert list(vocab.allowed) == ["ru"] and vocab.allowed["ru"].tolist() == [False] * 7 + [True]
    mask = LangVocab.from_shards(FakeShards()).mask(["en", "ru"], 10, always=[2])
    assert mask.tolist() == [[False, False, True, False, False, True, True, False, False, False],
                             [False, False, True, False, False, False, False, True, False, False]]


def test_config_validation():
    for bad in (dict(max_new_tokens=0), dict(temperature=-1), dict(top_p=0.0), dict(top_p=1.5),
                dict(top_k=-1), dict(repetition_penalty=0.0), dict(num_beams=0),
                dict(precision="fp16"), dict(stop=[""])):
        with pytest.raises(ValueError):
            GenerateConfig(**bad)


# ---------------------------------------------------------------------------- beam search

def table_step(table: dict[tuple[int, ...], dict[int, float]], n_rows: int, vocab: int):
    """A step function from a table: prefix -> {token: probability}; it keeps each row's history and
    reorders it by `parents`, as a decoder reorders its cache."""
    hist: list[tuple[int, ...]] = [()] * n_rows

    def step(tokens, parents):
        nonlocal hist
        if tokens is not None:
            hist = [hist[p] + (t,) for p, t in zip(parents.tolist(), tokens.tolist(), strict=True)]
        out = torch.full((n_rows, vocab), -math.inf)
        for r, h in enumerate(hist):
            for t, p in table.get(h, {0: 1.0}).items():
                out[r, t] = math.log(p)
        return out

    return step


# tokens: 0 = end, 1 = A, 2 = B, 3 = C. Greedy takes A (0.6) then at best 0.4: 0.24.
# The best sequence is B C <end> with 0.4 * 0.9 * 1.0 = 0.36.
TABLE = {(): {1: 0.6, 2: 0.4}, (1,): {0: 0.4, 2: 0.35, 3: 0.25}, (2,): {3: 0.9, 0: 0.1},
         (1, 2): {0: 1.0}, (1, 3): {0: 1.0}, (2, 3): {0: 1.0}}


def test_beam_search_finds_the_best_sequence_greedy_misses():
    greedy = beam_search(table_step(TABLE, 1, 4), 1, num_beams=1, max_new_tokens=5, eos_ids=[0])[0][0]
    assert greedy.tokens == [1] and greedy.logprob == pytest.approx(math.log(0.24))
    best = beam_search(table_step(TABLE, 2, 4), 1, num_beams=2, max_new_tokens=5, eos_ids=[0],
                       length_penalty=0.0)[0][0]
    assert best.tokens == [2, 3] and best.logprob == pytest.approx(math.log(0.36))
    assert best.score == pytest.approx(math.log(0.36))


def test_n_best_sorted_by_normalised_score():
    for lp in (0.0, 1.0, 2.0):
        hyps = beam_search(table_step(TABLE, 3, 4), 1, num_beams=3, max_new_tokens=5, eos_ids=[0],
                           length_penalty=lp, early_stopping=False, n_best=3)[0]
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        for h in hyps:
            assert h.score == pytest.approx(h.logprob / (len(h.tokens) + 1) ** lp)
        # complete sequences: B C .36 (3 tokens with the end), A .24 (2), A B .21 (3), A C .15 (3)
        want = {0.0: [[2, 3], [1], [1, 2]], 1.0: [[2, 3], [1, 2], [1, 3]], 2.0: [[2, 3], [1, 2], [1, 3]]}[lp]
        assert [h.tokens for h in hyps] == want


def test_exhaustive_beam_without_early_stopping_is_exact():
    """With more beams than candidates and early_stopping=False, beam search returns the brute-force best
    sequence for any length penalty (the stopping bound is exact)."""
    g = torch.Generator().manual_seed(0)
    vocab, L = 3, 4
    for _ in range(4):
        table = {}
        for n in range(L):
            for prefix in itertools.product(range(1, vocab), repeat=n):
                p = torch.rand(vocab, generator=g) ** 3
                table[prefix] = dict(enumerate((p / p.sum()).tolist()))
        for lp in (0.0, 1.0, 2.0, -0.5):
            best, best_tokens = -math.inf, None
            for n in range(0, L + 1):
                for seq in itertools.product(range(1, vocab), repeat=n):
                    lps = [math.log(table[seq[:i]][seq[i]]) for i in range(n)]
                    if n < L:  # a shorter sequence ends with token 0; one of L tokens is cut there
                        lps.append(math.log(table[seq][0]))
                    score = sum(lps) / len(lps) ** lp
                    if score > best:
                        best, best_tokens = score, list(seq)
            K = vocab ** L  # more than the candidates of any step: nothing is pruned
            got = beam_search(table_step(table, K, vocab), 1, num_beams=K, max_new_tokens=L, eos_ids=[0],
                              length_penalty=lp, early_stopping=False)[0][0]
            assert got.tokens == best_tokens and got.score == pytest.approx(best)


def test_early_stopping_false_stops_early_without_changing_the_result():
    """early_stopping=False may only stop once no running beam can win: the n-best list equals that of
    a search that always runs to max_new_tokens ("never"), for any length penalty."""
    g = torch.Generator().manual_seed(1)
    vocab, L, K = 4, 6, 2
    saved_steps = 0
    for _ in range(6):
        table = {}
        for n in range(L):
            for prefix in itertools.product(range(1, vocab), repeat=n):
                p = torch.rand(vocab, generator=g) ** 2
                p[0] += 0.3 * torch.rand(1, generator=g).item()  # ends are likely: hypotheses finish early
                table[prefix] = dict(enumerate((p / p.sum()).tolist()))
        for lp in (0.0, 1.0, 2.0, -0.5):
            results, calls = {}, {}
            for mode in (False, "never"):
                step = table_step(table, K, vocab)
                counted = []

                def counting(tokens, parents, step=step, counted=counted):
                    counted.append(1)
                    return step(tokens, parents)

                results[mode] = beam_search(counting, 1, num_beams=K, max_new_tokens=L, eos_ids=[0],
                                            length_penalty=lp, early_stopping=mode, n_best=K)[0]
                calls[mode] = len(counted)
            assert [h.tokens for h in results[False]] == [h.tokens for h in results["never"]]
            saved_steps += calls["never"] - calls[False]
    assert saved_steps > 0  # the bound did stop some searches early


def test_lm_beam_1_equals_greedy_and_batched_equals_alone():
    model = make()
    ps = prompts(3, lo=1, hi=10)
    beam1 = GenerateConfig(max_new_tokens=12, num_beams=1)
    hyps = lm_beam_search(model, ps, beam1, eos_ids=[EOS_ID])
    assert [h[0].tokens for h in hyps] == generate_ids(model, ps, GREEDY, stop_ids=[EOS_ID])
    beam4 = GenerateConfig(max_new_tokens=10, num_beams=4, length_penalty=1.0)
    batched = lm_beam_search(model, ps, beam4, eos_ids=[EOS_ID, 7], n_best=4)
    for p, hs in zip(ps, batched, strict=True):
        alone = lm_beam_search(model, [p], beam4, eos_ids=[EOS_ID, 7], n_best=4)[0]
        assert [h.tokens for h in hs] == [h.tokens for h in alone]
        assert [h.score for h in hs] == pytest.approx([h.score for h in alone], abs=1e-4)
        # each score is the model's own log-probability of the hypothesis
        h = hs[0]
        x = torch.tensor([p + h.tokens])
        with torch.no_grad():
            logp = model.lm_head(model(x)).log_softmax(-1)[0]
        total = float(sum(logp[len(p) - 1 + i, t] for i, t in enumerate(h.tokens)))
        if len(h.tokens) < beam4.max_new_tokens:  # it ended with one of the two end tokens
            ends = logp[len(p) - 1 + len(h.tokens), [EOS_ID, 7]].tolist()
            assert any(h.logprob == pytest.approx(total + e, abs=1e-3) for e in ends)
        else:
            assert h.logprob == pytest.approx(total, abs=1e-3)


def test_generate_with_beams_returns_the_best_hypothesis(tok):
    model = make(tok=tok)
    cfg = GenerateConfig(max_new_tokens=8, num_beams=3, precision="fp32")
    ids, index = encode_prompts(tok, ["In the"], "en")
    best = lm_beam_search(model, ids, cfg, lang_index=index, eos_ids=[EOS_ID])[0][0]
    assert generate(model, tok, ["In the"], "en", cfg) == [tok.decode(best.tokens, skip_special_tokens=True)]
    assert isinstance(best, Hypothesis)


# ---------------------------------------------------------------------------- parity with Hugging Face

@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_tokens_equal_hugging_face_generate(family):
    pytest.importorskip("transformers")
    from xling.hf import to_hf  # the export's weight map (its logit parity: tests/test_hf.py)

    model = make(n_langs=0, **FAMILIES[family])
    hf = to_hf(model)
    ps = prompts(3, lo=2, hi=9)
    T = max(len(p) for p in ps)
    x = torch.tensor([[0] * (T - len(p)) + p for p in ps])  # left padding, as HF wants for decoders
    mask = (x != 0).long()
    n = 20
    with torch.no_grad():
        want = hf.generate(x, attention_mask=mask, max_new_tokens=n, do_sample=False, num_beams=1,
                           eos_token_id=None, pad_token_id=0)[:, T:].tolist()
    cfg = GenerateConfig(max_new_tokens=n, temperature=0.0, stop_tokens=[])
    assert generate_ids(model, ps, cfg) == want
    assert generate_ids(model, ps[:1], cfg) == want[:1]


def _cycling_step(V: int = 6, rows: int = 1):
    """A decoder whose favourite next token is (last + 1) % 3 (a loop 0 1 2 0 1 2 ...), then the others by id;
    </s> = 5 is the least likely."""
    def step(tokens, parents):
        last = torch.zeros(rows, dtype=torch.long) if tokens is None else tokens
        logits = -torch.arange(V, dtype=torch.float).repeat(len(last), 1) / 10  # (N, V): lower ids preferred
        logits[torch.arange(len(last)), (last + 1) % 3] = 5.0
        return logits.log_softmax(-1)
    return step


@pytest.mark.parametrize("n", [2, 3])
def test_no_repeat_ngram_bans_exactly_the_repeats(n):
    plain = beam_search(_cycling_step(), 1, num_beams=1, max_new_tokens=12, eos_ids=[5])[0][0].tokens
    assert plain == [1, 2, 0] * 4  # the loop
    got = beam_search(no_repeat_ngram(_cycling_step(), n), 1, num_beams=1, max_new_tokens=12, eos_ids=[5])[0][0].tokens
    grams = [tuple(got[i:i + n]) for i in range(len(got) - n + 1)]
    assert len(grams) == len(set(grams))  # no n-gram twice
    # greedy reference: the favourite token unless it completes a seen n-gram, then the best allowed one
    ref, step = [], _cycling_step()
    logp = step(None, None)[0]
    for _ in range(12):
        seen = {tuple(ref[i:i + n]) for i in range(len(ref) - n + 1)}
        order = logp.argsort(descending=True).tolist()
        tok = next(t for t in order if len(ref) < n - 1 or (*ref[len(ref) - n + 1:], t) not in seen)
        ref.append(tok)
        if tok == 5:
            break
        logp = step(torch.tensor([tok]), torch.tensor([0]))[0]
    assert got == (ref[:-1] if ref[-1] == 5 else ref)
    assert no_repeat_ngram(_cycling_step(), 0)(None, None).shape == (1, 6)  # n = 0: the step unchanged
