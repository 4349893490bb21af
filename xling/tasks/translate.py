"""Machine translation with the pretrained Transformer: fine-tuning, beam-search decoding, evaluation.

    xling translate-train --run runs/demo                             # verse pairs -> runs/demo/translate/
    xling translate-train --run runs/demo --tsv my.tsv --src en --tgt fr translate.max_minutes=5
    xling translate --run runs/demo/translate --src en --tgt fr < input.txt > output.txt

    model, summary = finetune(model, shards, TranslateConfig(max_minutes=1), out_dir="runs/demo/translate")
    texts = translate(model, tokenizer, ["In the beginning was the word."], "en", "fr", cfg)

Format: the pretrained model is a causal decoder, so translation is a prompt continuation, one model for
every direction (many-to-many):

    <src> source tokens </s> <tgt> target tokens </s>

The loss covers only the target tokens and the final `</s>` (the prompt is context). With language
embeddings (`model.cfg.n_langs > 0`) the source language's index lies over `<src> source </s>` and the
target's over `<tgt> target </s>`, as XLM's TLM gives each segment its language. Why a prompt rather than
an encoder-decoder built from the bidirectional and causal modes: it reuses every pretrained weight in the
mode it was trained in (the demo pretrains with CLM), needs no new cross-attention weights (which a one-minute
fine-tune could not train), and decodes with the KV cache and beam search of `xling.generate`.

Training pairs come from the corpus (`Shards.pairs`, both directions of every configured pair) or from a
user's TSV file (`source<TAB>target`, both directions). Pairs longer than `max_len` tokens are skipped.
Decoding: sources sorted by length into batches, beam search over the batch's K copies of each prompt in
one KV cache; a source too long for the context is cut from the left (its beginning is dropped) with a
warning so the prompt leaves room for the output; an empty line gives an empty line.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from xling.batches import IGNORE, pad_right, target_span
from xling.errors import XlingError
from xling.evaluate import EvalContext, evaluation
from xling.evaluate import skipped as eval_skipped  # (`skipped` counts pairs here)
from xling.files import atomic_write_json, atomic_write_text, check_utf8, read_lines
from xling.generate import MAX_BEAMS, beam_search, no_repeat_ngram
from xling.metrics import bleu, chrf
from xling.model import KVCache
from xling.objectives import span_loss
from xling.precision import PRECISIONS, for_precision
from xling.progress import format_table, progress
from xling.report import MT_MIN_STEPS
from xling.tokenizer import EOS_ID, PAD_ID, lang_ids, lang_index


@dataclass
class TranslateConfig:
    directions: list[str] = field(default_factory=lambda: ["en-fr", "fr-en", "en-ru", "ru-en"])  # src-tgt
    # peak AdamW learning rate. Measured after 2,800 steps of configs/translation.toml, 10-minute fine-tunes (1,400-
    # 1,850 steps), 200 test verses, en->fr / fr->en BLEU: 5e-4 8.2 / 12.2, 1e-3 9.1 / 14.3, 2e-3 9.0 / 12.1.
    # (At 300 steps 2e-3 had the lowest valid loss: 4.67 vs 4.87 at 1e-3; longer fine-tunes want less.)
    # On en<->fr alone (twice the steps per direction): 1e-3 12.8 / 15.6, 1.5e-3 13.7 / 15.9, which
    # configs/translation.toml uses (1,500 steps; with target spans, 1,889 steps: 15.2 / 19.1).
    lr: float = 1e-3
    min_lr: float = 1e-4  # where the cosine ends (schedule = "cosine")
    schedule: str = "cosine"  # cosine (linear warmup, then cosine to min_lr) | constant (warmup, then lr)
    warmup_steps: int = 30  # linear warmup steps
    weight_decay: float = 0.01  # AdamW decay of matrices and embeddings
    # pairs per step. 10-minute en<->fr fine-tunes of the 2,800-step translation model (before target spans),
    # en->fr / fr->en BLEU: 16 at lr 7e-4 11.4 / 15.6 (2,886 steps), 32 at 1e-3 12.8 / 15.6 (1,473), 64 at
    # 1.4e-3 11.4 / 12.9 (680)
    batch_size: int = 32
    max_len: int = 128  # tokens of `<src> x </s> <tgt> y` at most (capped by the model's block_size)
    # read `<src> x </s>` bidirectionally (a prefix LM, as an encoder would), the target causally. Measured on
    # the demo model, 300 steps at lr 2e-3, en<->fr valid loss: 4.68 prefix vs 4.67 causal, so off by default
    prefix_lm: bool = False
    # cross-entropy label smoothing (Vaswani et al. 2017: 0.1). Measured after 2,800 steps of configs/translation.toml,
    # 10-minute fine-tunes at lr 2e-3, 200 test verses: en->fr / fr->en BLEU 9.0 / 12.1 with 0.1, 7.9 / 11.2 without
    label_smoothing: float = 0.1
    # torch.compile the loss (model + output layer + cross-entropy; one graph, the length symbolic): more steps
    # in a wall-clock budget once its 30-70 s of cold compilation are paid, so time budgets under 2 minutes
    # (max_minutes < 2) always run eagerly
    compile: bool = True
    max_minutes: float = 1.0  # fine-tune budget in wall-clock minutes (0 = unset)
    max_steps: int = 0  # fine-tune budget in optimizer steps (0 = unset); the first budget reached ends it
    precision: str = "auto"  # auto (bf16 autocast/weights where native) | fp32 | bf16
    num_beams: int = 4  # beam size (1 = greedy)
    length_penalty: float = 1.0  # beam score = logprob / length ** length_penalty
    # beam: true stops a sentence once num_beams hypotheses ended (Hugging Face's early_stopping=True, fast);
    # false only once no running beam can beat them (exact). A model sure of one output lets the other beams end
    # early as junk, and true can then stop before the best beam ends (an overfit model kept "chez les sies."
    # at logprob -7.6 over "chez les siens." at -0.08)
    early_stopping: bool = True
    # no output repeats one of its own n-grams of this size (0 = off). Short fine-tunes loop ("and he sent them
    # to them, and he sent them to them"): on 100 valid verses en->fr BLEU 5.25 off, 6.67 at 2, 6.73 at 3, 6.63
    # at 4 (the demo model after 30 min + a 10-minute fine-tune)
    no_repeat_ngram: int = 3
    max_new_tokens: int = 0  # tokens generated at most; 0 = 1.5 x source length + 10 (capped by the context)
    decode_batch: int = 32  # sentences decoded together (x num_beams rows)
    test_sentences: int = 200  # test pairs per direction in the demo evaluation (evenly spread); 0 = all
    rnn_baseline: bool = True  # demo evaluation: also train the RNN baseline for the same wall-clock time
    seed: int = 1234  # data order and initialisation of the fine-tune

    def __post_init__(self):
        for d in self.directions:
            parts = d.split("-")
            if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
                raise ValueError(f"direction {d!r} must be src-tgt with two different languages, e.g. en-fr")
        for name, ok, need in (("schedule", self.schedule in ("cosine", "constant"), "cosine or constant"),
                               ("precision", self.precision in PRECISIONS, ", ".join(PRECISIONS)),
                               ("num_beams", 1 <= self.num_beams <= MAX_BEAMS, f"in 1..{MAX_BEAMS} (1 = greedy)"),
                               ("batch_size", self.batch_size >= 1, ">= 1"),
                               ("decode_batch", self.decode_batch >= 1, ">= 1"),
                               ("max_len", self.max_len >= 8, ">= 8"),
                               ("lr", self.lr > 0 and self.min_lr <= self.lr, "> 0 and >= min_lr")):
            if not ok:
                raise ValueError(f"{name} must be {need}, not {getattr(self, name)!r}")
        for name in ("max_minutes", "max_steps", "warmup_steps", "max_new_tokens", "test_sentences",
                     "weight_decay", "min_lr", "label_smoothing"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)}")

    def pairs(self) -> list[tuple[str, str]]:
        return [tuple(d.split("-")) for d in self.directions]


@dataclass
class Example:
    src: np.ndarray  # source token ids, no specials
    tgt: np.ndarray  # target token ids, no specials
    src_tag: int  # language tag id of the source (language index: tokenizer.lang_index)
    tgt_tag: int

    def __len__(self) -> int:  # input tokens: `<src> x </s> <tgt> y` (the final </s> is only a target)
        return len(self.src) + len(self.tgt) + 3


# ---------------------------------------------------------------------------- data

def corpus_examples(shards, directions: list[tuple[str, str]], split: str = "train",
                    max_len: int = 128) -> tuple[list[Example], int]:
    """Both sides of every translation pair of `split`, per direction; (examples, pairs skipped as too long)."""
    out, skipped = [], 0
    for a, b in directions:
        rows = np.asarray(shards.pairs(split, a, b))  # (M, 2)
        ta, oa = shards.tokens(split, a), np.asarray(shards.offsets(split, a))
        tb, ob = shards.tokens(split, b), np.asarray(shards.offsets(split, b))
        tag_a, tag_b = shards.lang_token_ids[a], shards.lang_token_ids[b]
        for i, j in rows:
            ex = Example(ta[oa[i]:oa[i + 1]], tb[ob[j]:ob[j + 1]], tag_a, tag_b)
            if len(ex.src) == 0 or len(ex.tgt) == 0:
                continue
            if len(ex) > max_len:
                skipped += 1
                continue
            out.append(ex)
    return out, skipped


def tsv_examples(path: str | Path, tokenizer, src: str, tgt: str, max_len: int = 128) -> tuple[list[Example], int]:
    """Examples in both directions from a `source<TAB>target` file; (examples, pairs skipped as too long)."""
    tags = lang_ids(tokenizer, [src, tgt])
    out, skipped = [], 0
    for n, line in enumerate(read_lines(path, "parallel TSV file"), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise XlingError(f"parallel TSV file {path} line {n}: expected `source<TAB>target` with two "
                             f"non-empty fields, found {len(parts)} field(s); fix that line")
        x, y = (np.asarray(tokenizer.encode(p.strip(), add_special_tokens=False).ids, np.int64) for p in parts)
        for ex in (Example(x, y, tags[src], tags[tgt]), Example(y, x, tags[tgt], tags[src])):
            if len(ex) > max_len:
                skipped += 1
            else:
                out.append(ex)
    return out, skipped


def make_batch(examples: list[Example], pad_multiple: int = 16, max_len: int | None = None) -> dict[str, Tensor]:
    """Right-padded inputs, targets (IGNORE outside the target + final </s>), per-segment language ids and
    prefix_len (B,): the length of `<src> x </s>`, what a prefix LM reads bidirectionally.

    The length is rounded up to a multiple of `pad_multiple` (few shapes), but never past `max_len`.
    """
    inputs, outputs = [], []
    for e in examples:
        x = np.concatenate([[e.src_tag], e.src, [EOS_ID, e.tgt_tag], e.tgt, [EOS_ID]]).astype(np.int64)
        inputs.append(x[:-1])  # position j predicts x[j + 1]
        outputs.append(np.concatenate([np.full(len(e.src) + 2, IGNORE), x[len(e.src) + 3:]]))  # <tgt> predicts y[0]
    idx, _ = pad_right(inputs, PAD_ID, multiple=pad_multiple, cap=max_len)  # (B, T)
    targets, _ = pad_right(outputs, IGNORE, width=idx.shape[1])  # (B, T)
    prefix = torch.tensor([len(e.src) + 2 for e in examples], dtype=torch.long)  # (B,) <src> x </s>
    src = torch.tensor([lang_index(e.src_tag) for e in examples])[:, None]  # (B, 1)
    tgt = torch.tensor([lang_index(e.tgt_tag) for e in examples])[:, None]  # (B, 1)
    # <src> x </s> in the source language, <tgt> y (and the padding after it, never a target) in the target's
    lang = torch.where(torch.arange(idx.shape[1])[None, :] < prefix[:, None], src, tgt)  # (B, T)
    return {"idx": idx, "targets": targets, "lang_ids": lang, "prefix_len": prefix, **target_span(targets)}


def mt_loss(model: nn.Module, batch: dict[str, Tensor], prefix_lm: bool = False, label_smoothing: float = 0.0
            ) -> Tensor:
    """Mean cross-entropy over target positions; the output layer runs only on each row's target span (the
    shapes depend only on the batch's, so the same code serves eager and compiled)."""
    hidden = model(batch["idx"], lang_ids=batch["lang_ids"],  # (B, T, D); right padding: never seen by real rows
                   prefix_len=batch["prefix_len"] if prefix_lm else None)
    return span_loss(model.lm_head, hidden, batch, label_smoothing)


# ---------------------------------------------------------------------------- fine-tuning

def _lr(cfg: TranslateConfig, step: int, frac: float) -> float:
    """The pretraining schedule (`trainer.warmup_cosine`), or its warmup then a constant lr."""
    from xling.trainer import warmup_cosine

    return warmup_cosine(step, 0.0 if cfg.schedule == "constant" else frac, lr=cfg.lr,
                         min_lr=cfg.lr if cfg.schedule == "constant" else cfg.min_lr, warmup_steps=cfg.warmup_steps)


def loss_fn(cfg: TranslateConfig, device: torch.device, backend: str | Callable = "inductor"
            ) -> Callable[[nn.Module, dict], Tensor]:
    """(model, batch) -> the fine-tune's loss: eager, or compiled when cfg.compile (falls back to eager with a
    warning if compiling fails, e.g. without a C++ compiler).

    Measured on the demo model (2 cores, under load, en<->fr batches of 32, before target spans): 1.40 s a step
    compiled vs 1.75 s eager, after a 73 s cold compile. bench/translate_finetune.py times the step now.
    """
    eager = functools.partial(mt_loss, prefix_lm=cfg.prefix_lm, label_smoothing=cfg.label_smoothing)
    if not cfg.compile or 0 < cfg.max_minutes < 2:
        return eager
    from xling.trainer import compiled_call

    compiled = torch.compile(eager, backend=backend)
    failed = False

    def run(model: nn.Module, batch: dict) -> Tensor:
        nonlocal failed
        if failed:
            return eager(model, batch)
        try:
            with compiled_call(batch, variable_length=True, math_sdpa=torch.device(device).type == "cpu"):
                return compiled(model, batch)
        except torch._dynamo.exc.BackendCompilerFailed as e:
            warnings.warn(f"translate: torch.compile failed ({str(e).splitlines()[0][:200]}); fine-tuning "
                          f"eagerly (set translate.compile=false to skip the attempt)", stacklevel=2)
            failed = True
            return eager(model, batch)

    return run


POOL = 16  # length batching: a batch is a window of POOL x batch_size examples sorted by length


def finetune(model: nn.Module, data, cfg: TranslateConfig, *, out_dir: str | Path | None = None,
             tokenizer_sha256: str = "", cache_key: str = "", desc: str = "translate") -> tuple[nn.Module, dict]:
    """Fine-tune `model` in place for translation; (model in eval mode, summary).

    data: a `Shards` (its train pairs in cfg.directions) or a list of `Example`s. The budget is
    cfg.max_minutes and/or cfg.max_steps (whichever ends first). With `out_dir` the weights are saved
    there as an xling checkpoint (`xling translate --run out_dir` loads it).
    """
    from xling.precision import autocast_dtype, training_autocast
    from xling.trainer import adamw

    if not cfg.max_minutes and not cfg.max_steps:
        raise XlingError("set a fine-tune budget: translate.max_minutes or translate.max_steps")
    max_len = min(cfg.max_len, model.cfg.block_size)
    skipped = 0
    examples = data if isinstance(data, list) else None
    if examples is None:
        examples, skipped = corpus_examples(data, cfg.pairs(), "train", max_len)
    examples = [e for e in examples if len(e) <= max_len]
    if not examples:
        raise XlingError(f"no translation pairs of at most {max_len} tokens to fine-tune on; give aligned data "
                         f"or raise translate.max_len")
    dev = next(model.parameters()).device
    amp = autocast_dtype(cfg.precision, dev)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    lengths = np.array([len(e) for e in examples])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = adamw(params, dev, weight_decay=cfg.weight_decay, lr=cfg.lr, betas=(0.9, 0.98))
    model.train()
    B, N = cfg.batch_size, len(examples)
    step_loss = loss_fn(cfg, dev)
    losses, step, tokens, t0 = [], 0, 0, time.perf_counter()
    bar = progress(total=cfg.max_steps or None, desc=desc, unit="step")

    def frac() -> float:
        parts = [step / cfg.max_steps] if cfg.max_steps else []
        if cfg.max_minutes:
            parts.append((time.perf_counter() - t0) / (60 * cfg.max_minutes))
        return max(parts)

    while (f := frac()) < 1.0:
        # length batching: draw POOL x a batch (distinct if the data is smaller), sort by length, take one window.
        # Padded to a multiple of 8, en<->fr batches of 32 are 91% real tokens (80% with 4x and multiples of 16)
        pool = rng.permutation(N)[:POOL * B] if N <= POOL * B else rng.integers(0, N, size=POOL * B)
        pool = pool[np.argsort(lengths[pool], kind="stable")]
        start = int(rng.integers(0, len(pool) - min(B, len(pool)) + 1))
        batch = {k: v.to(dev) for k, v in make_batch([examples[i] for i in pool[start:start + B]], pad_multiple=8,
                                                    max_len=model.cfg.block_size).items()}
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step, f)
        with training_autocast(dev.type, amp):
            loss = step_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        tokens += int((batch["targets"] != IGNORE).sum())
        losses.append(loss.item())
        bar.update(1)
        if step % 5 == 0:
            f = max(frac(), 1e-9)
            eta = (time.perf_counter() - t0) * (1 - f) / f
            bar.set_postfix_str(f"loss {np.mean(losses[-5:]):.3f} eta {eta:.0f}s", refresh=False)
    bar.close()
    seconds = time.perf_counter() - t0
    model.eval()
    k = max(1, min(10, len(losses) // 4))
    summary = {"steps": step, "minutes": seconds / 60, "examples": N, "skipped_too_long": skipped,
               "target_tokens": tokens, "tokens_per_s": tokens / max(seconds, 1e-9),
               "loss_first": float(np.mean(losses[:k])), "loss_last": float(np.mean(losses[-k:])),
               "directions": list(cfg.directions)}
    if out_dir is not None:
        from xling.checkpoint import save_checkpoint

        save_checkpoint(out_dir, step, model_state=model.state_dict(), tokenizer_sha256=tokenizer_sha256, keep=1,
                        config={"model": asdict(model.cfg), "translate": asdict(cfg), "cache_key": cache_key,
                                "summary": summary})
    return model, summary


# ---------------------------------------------------------------------------- decoding

class _Prompts:
    """Left-padded prompts in a KV cache; per-token language ids (source part, then target)."""

    @torch.inference_mode()
    def __init__(self, model: nn.Module, prompts: list[list[int]], langs: list[list[int]] | None,
                 prefix: list[int] | None = None):
        self.model, dev = model, next(model.parameters()).device
        lens = [len(p) for p in prompts]
        B, T0 = len(prompts), max(lens)
        idx = torch.full((B, T0), PAD_ID, dtype=torch.long)
        lang = torch.zeros((B, T0), dtype=torch.long)
        for r, p in enumerate(prompts):
            idx[r, T0 - len(p):] = torch.tensor(p)
            if langs is not None:
                lang[r, T0 - len(p):] = torch.tensor(langs[r])
        real = torch.arange(T0)[None, :] >= torch.tensor([T0 - n for n in lens])[:, None]  # (B, T0)
        positions = (real.long().cumsum(1) - 1).clamp(min=0)  # (B, T0) real tokens counted from 0
        self.lang = lang[:, -1:].to(dev) if langs is not None else None  # (B, 1) the target language
        self.next_pos = torch.tensor(lens, device=dev)[:, None]  # (B, 1)
        self.cache = KVCache()
        # prefix[r] tokens of prompt r are read bidirectionally; in the left-padded row they end at T0 - len + prefix
        prefix_len = None if prefix is None else torch.tensor([T0 - n + k for n, k in zip(lens, prefix, strict=True)])
        h = model(idx.to(dev), positions=positions.to(dev), pad_mask=real.to(dev), kv_cache=self.cache,
                  lang_ids=lang.to(dev) if langs is not None else None,
                  prefix_len=None if prefix_len is None else prefix_len.to(dev))  # (B, T0, D)
        self.logits = model.lm_head(h[:, -1]).float()  # (B, V)
        self.max_steps = model.cfg.block_size - T0 + 1  # the last chosen token is never fed back

    @torch.inference_mode()
    def step(self, tokens: Tensor | None, parents: Tensor | None) -> Tensor:
        """beam_search's step: (N, V) log-probs after appending `tokens` to the rows `parents`."""
        if tokens is None:
            return self.logits.log_softmax(-1)
        self.cache.reorder(parents)
        self.next_pos = self.next_pos.index_select(0, parents)
        if self.lang is not None:
            self.lang = self.lang.index_select(0, parents)
        h = self.model(tokens[:, None], positions=self.next_pos, lang_ids=self.lang, kv_cache=self.cache)
        self.next_pos = self.next_pos + 1
        return self.model.lm_head(h[:, -1]).float().log_softmax(-1)  # (N, V)


def max_source_tokens(block_size: int, cfg: TranslateConfig) -> int:
    """Longest source kept: the prompt (source + 3 specials) leaves max_new_tokens (or half the context)."""
    return max(1, block_size - 3 - (cfg.max_new_tokens or block_size // 2))


def translate_ids(model: nn.Module, sources: list[list[int]], src_tag: int, tgt_tag: int,
                  cfg: TranslateConfig) -> list[list[int]]:
    """Translate token-id sources (no specials) with beam search; the output ids of each (no </s>).

    An empty source gives an empty output. A source longer than `max_source_tokens` loses its beginning
    (a warning says how many). The model is used as given (`for_precision` casts a copy).
    """
    out: list[list[int]] = [[] for _ in sources]
    limit = max_source_tokens(model.cfg.block_size, cfg)
    long = [i for i, s in enumerate(sources) if len(s) > limit]
    if long:
        warnings.warn(f"{len(long)} source(s) longer than {limit} tokens were cut from the left to fit the "
                      f"context (line(s) {', '.join(str(i + 1) for i in long[:5])}{'…' if len(long) > 5 else ''})",
                      stacklevel=2)
    n_langs = model.cfg.n_langs
    if n_langs and lang_index(max(src_tag, tgt_tag)) >= n_langs:
        raise XlingError(f"language tag id {max(src_tag, tgt_tag)} is outside the model's {n_langs} language "
                         f"embeddings; use the tokenizer the model was trained with")
    todo = sorted((i for i, s in enumerate(sources) if len(s)), key=lambda i: len(sources[i]))
    K = cfg.num_beams
    for k in range(0, len(todo), cfg.decode_batch):
        rows = todo[k:k + cfg.decode_batch]
        prompts = [[src_tag, *list(sources[i])[-limit:], EOS_ID, tgt_tag] for i in rows]
        langs = None
        if n_langs:
            langs = [[lang_index(src_tag)] * (len(p) - 1) + [lang_index(tgt_tag)] for p in prompts]
        prefix = [len(p) - 1 for p in prompts for _ in range(K)] if cfg.prefix_lm else None  # `<src> x </s>`
        state = _Prompts(model, [p for p in prompts for _ in range(K)],
                         None if langs is None else [x for x in langs for _ in range(K)], prefix)
        longest = max(len(p) for p in prompts) - 3
        n_new = min(cfg.max_new_tokens or int(1.5 * longest) + 10, state.max_steps)
        step = no_repeat_ngram(state.step, cfg.no_repeat_ngram)
        hyps = beam_search(step, len(rows), num_beams=K, max_new_tokens=n_new, eos_ids=[EOS_ID],
                           length_penalty=cfg.length_penalty, early_stopping=cfg.early_stopping)
        for i, h in zip(rows, hyps, strict=True):
            out[i] = h[0].tokens if h else []
    return out


def translate(model: nn.Module, tokenizer, lines: list[str], src: str, tgt: str,
              cfg: TranslateConfig | None = None) -> list[str]:
    """Translate text lines from `src` to `tgt`; one output line per input line (empty stays empty)."""
    cfg = cfg or TranslateConfig()
    tags = lang_ids(tokenizer, [src, tgt])
    ids = [tokenizer.encode(t, add_special_tokens=False).ids if t.strip() else [] for t in lines]
    out = translate_ids(for_precision(model, cfg.precision), ids, tags[src], tags[tgt], cfg)
    return [" ".join(tokenizer.decode(o, skip_special_tokens=True).split()) for o in out]


# ---------------------------------------------------------------------------- models on disk

DECODE_ONLY = ("num_beams", "length_penalty", "early_stopping", "no_repeat_ngram", "max_new_tokens", "decode_batch",
               "test_sentences", "rnn_baseline")


def finetune_key(cfg: TranslateConfig, pretrain_step: int, tokenizer_sha256: str, model_cfg) -> str:
    """What a cached fine-tune depends on: the pretrained checkpoint, the tokenizer and the training settings."""
    train = {k: v for k, v in asdict(cfg).items() if k not in DECODE_ONLY}
    blob = json.dumps({"translate": train, "step": pretrain_step, "tokenizer": tokenizer_sha256,
                       "model": asdict(model_cfg)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _cached_state(out_dir: Path, key: str):
    from xling.checkpoint import load_checkpoint

    if not (out_dir / "latest").is_file():
        return None
    try:
        ckpt = load_checkpoint(out_dir, train_state=False)
    except XlingError:
        return None  # a damaged cache is rebuilt
    return ckpt if ckpt.config.get("cache_key") == key else None


def run_config(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = (),
               config: str | None = None) -> TranslateConfig:
    """[translate] of a run's saved config.toml (defaults where absent) <- a TOML file <- dotted overrides."""
    from xling.config import load_config, read_toml

    p = Path(run_dir) / "config.toml"
    saved = read_toml(p, "the run's config").get("translate", {}) if p.is_file() else {}
    return load_config(config, list(overrides), base={"translate": saved}).translate


def load_translator(path: str | Path):
    """(model, tokenizer) from a fine-tuned `<run>/translate`, a run directory (its translate/ if there is
    one, else its pretrained checkpoint) or a checkpoint directory."""
    from xling.checkpoint import load_run as load_for_generation

    return load_for_generation(_translator_path(path))


def _translator_path(path: str | Path) -> Path:
    path = Path(path)
    return path / "translate" if (path / "translate" / "latest").is_file() else path


def trained_prefix_lm(path: str | Path) -> bool:
    """Whether the translation fine-tune at `path` (as `load_translator` resolves it) was a prefix LM: decoding
    must read the source the way training did. False for a model that `translate-train` did not write."""
    from xling.checkpoint import find_checkpoint

    path = _translator_path(path)
    try:
        step = find_checkpoint(path / "checkpoints" if (path / "checkpoints").is_dir() else path)
        saved = json.loads((step / "config.json").read_text(encoding="utf-8")).get("translate", {})
    except (XlingError, OSError, ValueError):
        return False  # load_translator reports a missing or corrupt checkpoint
    return bool(saved.get("prefix_lm", False))


def finetune_run(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = (), tsv: str | None = None,
                 src: str | None = None, tgt: str | None = None, config: str | None = None) -> dict:
    """`xling translate-train`: fine-tune a run's pretrained model, save it in `<run>/translate/`."""
    from xling.checkpoint import load_model
    from xling.shards import Shards
    from xling.tokenizer import load_tokenizer, tokenizer_hash

    rd = Path(run_dir)
    cfg = run_config(rd, overrides, config)
    model, mcfg, meta = load_model(rd / "checkpoints")
    sha = tokenizer_hash(rd / "tokenizer")
    if tsv:
        if not (src and tgt):
            raise XlingError("--tsv needs --src and --tgt: the languages of its two columns")
        data, skipped = tsv_examples(tsv, load_tokenizer(rd / "tokenizer"), src, tgt, min(cfg.max_len, mcfg.block_size))
        key = ""  # user data: never mistaken for the evaluation's cached fine-tune
    else:
        data, skipped = Shards(rd / "shards", expect_tokenizer_hash=sha), 0
        key = finetune_key(cfg, int(meta["step"]), sha, mcfg)
    _, summary = finetune(model, data, cfg, out_dir=rd / "translate", tokenizer_sha256=sha, cache_key=key)
    summary["skipped_too_long"] += skipped
    rows = [[k, v if not isinstance(v, list) else ",".join(v)] for k, v in summary.items()]
    print(format_table(["fine-tune", "value"], rows))
    print(f"translate-train: saved {rd / 'translate'}; try `xling translate --run {rd / 'translate'} "
          f"--src {cfg.pairs()[0][0]} --tgt {cfg.pairs()[0][1]}`")
    return summary


def translate_cli(model_path: str, src: str, tgt: str, input_path: str | None = None,
                  output_path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> int:
    """`xling translate`: lines from --input (or stdin) to --output (written atomically) or stdout."""
    from xling.config import load_config

    if src == tgt:  # the model was never taught to copy: it printed other text with exit 0
        raise XlingError(f"--src and --tgt are both {src!r}; give two different languages")
    cfg = load_config(None, list(overrides)).translate
    model, tok = load_translator(model_path)
    cfg = replace(cfg, prefix_lm=trained_prefix_lm(model_path))  # decode as the fine-tune read its sources
    lang_ids(tok, [src, tgt])  # an unknown language fails before any input is read
    lines = read_lines(input_path, "input file") if input_path else \
        check_utf8(sys.stdin.read(), "standard input").splitlines()
    out = translate(model, tok, lines, src, tgt, cfg)
    text = "".join(line + "\n" for line in out)
    if output_path:
        atomic_write_text(output_path, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return 0


# ---------------------------------------------------------------------------- demo evaluation

def _test_set(ctx: EvalContext, a: str, b: str, n: int) -> tuple[list[np.ndarray], list[str], list[str]]:
    """(source ids, source texts, reference texts) of n test pairs spread evenly over the test chapters."""
    rows = np.asarray(ctx.shards.pairs("test", a, b))
    if n and len(rows) > n:
        rows = rows[np.unique(np.linspace(0, len(rows) - 1, n).round().astype(int))]
    ta, tb = ctx.corpus.texts("test", a), ctx.corpus.texts("test", b)
    src_ids = [np.asarray(ctx.shards.segment("test", a, int(i)), np.int64) for i, _ in rows]
    return src_ids, [ta[i] for i, _ in rows], [tb[j] for _, j in rows]


def _rnn_outputs(ctx: EvalContext, cfg: TranslateConfig, key: str, minutes: float, tests: dict) -> tuple:
    """The RNN baseline's test translations per direction and its training summary.

    Trained for `minutes` on the same train pairs; the weights are cached in `<run>/translate/rnn/` under
    the fine-tune's key and budget, so a re-run only decodes.
    """
    from xling.tasks import rnn_mt

    path, info = ctx.run_dir / "translate" / "rnn", ctx.run_dir / "translate" / "rnn.json"
    # bf16 where the CPU has it natively, as the Transformer's fine-tune: equal wall-clock, equal footing. Each
    # system keeps its measured better label smoothing (TranslateConfig: 0.1, RNNConfig: none)
    rnn_cfg = rnn_mt.RNNConfig(precision="auto")
    want = {"key": key, "minutes": round(minutes, 4), "config": asdict(rnn_cfg)}
    saved = json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {}
    model = None
    if saved.get("want") == want:
        try:
            model, summary = rnn_mt.load_rnn(path), saved["summary"]
        except XlingError:
            model = None
    if model is None:
        model, summary = rnn_mt.train_rnn(ctx.shards, cfg.pairs(), rnn_cfg, minutes=minutes,
                                          seed=cfg.seed)
        rnn_mt.save_rnn(model, path)
        atomic_write_json(info, {"want": want, "summary": summary})
    hyps = {}
    for d, (ids, _, _) in tests.items():
        a, b = d.split("-")
        out = rnn_mt.translate_ids(model, ids, b, num_beams=cfg.num_beams, src_lang_tag=a,
                                   length_penalty=cfg.length_penalty, no_repeat_ngram=cfg.no_repeat_ngram,
                                   max_new_tokens=cfg.max_new_tokens or int(1.5 * max(map(len, ids))) + 10)
        hyps[d] = [" ".join(ctx.tokenizer.decode(o, skip_special_tokens=True).split()) for o in out]
    return hyps, summary


def _short(text: str, n: int = 160) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


@evaluation("translation", order=70)
def eval_translation(ctx: EvalContext) -> dict:
    from xling.tokenizer import tokenizer_hash

    cfg = run_config(ctx.run_dir)
    dirs = [f"{a}-{b}" for a, b in cfg.pairs() if a in ctx.langs and b in ctx.langs]
    if not dirs:
        return eval_skipped(f"none of translate.directions ({', '.join(cfg.directions)}) is between this run's "
                            f"languages", "Machine translation")
    cfg = replace(cfg, directions=dirs)  # the run's languages only
    sha = tokenizer_hash(ctx.run_dir / "tokenizer")
    key = finetune_key(cfg, ctx.step, sha, ctx.model.cfg)
    out_dir = ctx.run_dir / "translate"
    model = copy.deepcopy(ctx.model)
    ckpt = _cached_state(out_dir, key)
    if ckpt is not None:
        model.load_state_dict(ckpt.model_state)
        summary = ckpt.config["summary"]
    else:
        model, summary = finetune(model, ctx.shards, cfg, out_dir=out_dir, tokenizer_sha256=sha, cache_key=key)
    model = for_precision(model.eval(), cfg.precision)
    tests = {d: _test_set(ctx, *d.split("-"), cfg.test_sentences) for d in dirs}
    hyps, n_cut = {}, 0
    for d, (ids, _, _) in progress(tests.items(), desc="translate test", total=len(tests), unit="dir"):
        a, b = d.split("-")
        n_cut += sum(len(x) > max_source_tokens(model.cfg.block_size, cfg) for x in ids)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # counted above and said in the report
            out = translate_ids(model, [list(x) for x in ids], ctx.shards.lang_token_ids[a],
                                ctx.shards.lang_token_ids[b], cfg)
        hyps[d] = [" ".join(ctx.tokenizer.decode(o, skip_special_tokens=True).split()) for o in out]
    rnn_hyps, rnn_summary = {}, {}
    if cfg.rnn_baseline:
        with torch.autocast("cpu", enabled=False):  # the RNN sets its own precision (evaluate() wraps us in bf16)
            rnn_hyps, rnn_summary = _rnn_outputs(ctx, cfg, key, summary["minutes"], tests)
    metrics, rows, examples, sigs = {}, [], [], {}
    for d, (_, srcs, refs) in tests.items():
        tgt = d.split("-")[1]
        (b, sigs["bleu"]), (c, sigs["chrf"]) = bleu(hyps[d], refs, tgt), chrf(hyps[d], refs)
        metrics[f"mt.bleu.{d}"], metrics[f"mt.chrf.{d}"] = b, c
        rb = rc = "-"
        if d in rnn_hyps:
            rb, rc = bleu(rnn_hyps[d], refs, tgt)[0], chrf(rnn_hyps[d], refs)[0]
            metrics[f"mt.rnn_bleu.{d}"], metrics[f"mt.rnn_chrf.{d}"] = rb, rc
        rows.append([d, b, c, rb, rc, len(refs)])
        for i in np.unique(np.linspace(0, len(refs) - 1, 3).round().astype(int)):
            examples.append([d, _short(srcs[i]), _short(refs[i]), _short(hyps[d][i]),
                             _short(rnn_hyps[d][i]) if d in rnn_hyps else "-"])
    # the budget behind the numbers: the report's headline shows BLEU only from a fine-tune long enough to
    # measure something (MT_MIN_STEPS); a shorter one is labelled a smoke test here
    metrics.update({"mt.finetune_steps": int(summary["steps"]), "mt.finetune_minutes": float(summary["minutes"]),
                    "mt.items": int(sum(r[-1] for r in rows))})
    smoke = summary["steps"] < MT_MIN_STEPS
    rs = {k: rnn_summary.get(k, float("nan")) for k in ("steps", "params", "loss", "valid_loss")}
    rnn_text = (f"RNN baseline (bidirectional GRU encoder + attention decoder; same tokenizer, pairs, beam search and "
                f"{summary['minutes']:.2f} wall-clock minutes): {rs['steps']:,} steps, {rs['params'] / 1e6:.1f}M "
                f"parameters, train loss {rs['loss']:.2f}, valid loss {rs['valid_loss'] or float('nan'):.2f}."
                if cfg.rnn_baseline else "RNN baseline off (translate.rnn_baseline=false).")
    text = (f"The pretrained model fine-tuned as `<src> source </s> <tgt> target </s>` (loss on the target only) "
            f"on train verse pairs of {', '.join(dirs)}: {summary['steps']:,} steps in {summary['minutes']:.2f} min, "
            f"{summary['examples']:,} pairs, loss {summary['loss_first']:.2f} -> {summary['loss_last']:.2f}. "
            f"Decoded with beam search (beam {cfg.num_beams}, length penalty {cfg.length_penalty}) on "
            f"{rows[0][-1]:,} test pairs per direction spread over the held-out test chapters"
            f"{f' ({n_cut} long sources lost their beginning to fit the context)' if n_cut else ''}. {rnn_text} "
            f"{ctx.provenance('test')}.")
    title = "Machine translation"
    if smoke:
        title += f" — smoke test ({summary['minutes'] * 60:.0f} s fine-tune): not a quality measurement"
        text = (f"Smoke test: {summary['steps']:,} fine-tune steps (fewer than {MT_MIN_STEPS:,}) show that the recipe "
                f"runs end to end, not how well either system translates; the headline leaves these numbers out. "
                f"`xling translate-train --run {ctx.run_dir} translate.max_minutes=10` (or configs/translation.toml) "
                f"measures quality. " + text)
    return {"metrics": metrics, "signatures": sigs, "sections": [{"title": title, "blocks": [
        {"kind": "text", "text": text},
        {"kind": "table", "header": ["direction", "BLEU", "chrF", "RNN BLEU", "RNN chrF", "sentences"], "rows": rows},
        {"kind": "text", "text": f"sacrebleu signatures: BLEU {sigs['bleu']}; chrF {sigs['chrf']}."},
        {"kind": "table", "header": ["direction", "source", "reference", "Transformer", "RNN"], "rows": examples},
    ]}]}
