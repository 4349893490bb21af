"""Translation by beam search over a KV cache of left-padded prompts.

    texts = translate(model, tokenizer, ["In the beginning was the word."], "en", "fr", cfg)
    ids = translate_ids(model, [source_ids], src_tag, tgt_tag, cfg, lang_index=(0, 1))   # ids in, ids out
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from xling.errors import XlingError
from xling.generate import beam_search, no_repeat_ngram
from xling.model import KVCache
from xling.precision import for_precision
from xling.tasks.translate.config import TranslateConfig
from xling.tokenizer import EOS_ID, PAD_ID, lang_ids, lang_index


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
                  cfg: TranslateConfig, *, lang_index: tuple[int, int]) -> list[list[int]]:
    """Translate token-id sources (no specials) with beam search; the output ids of each (no </s>).

    lang_index: the (source, target) language indices, the model's language-embedding rows (unused without them):
    `tokenizer.lang_index`, or the position in `shards.langs`.

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
    if n_langs and max(lang_index) >= n_langs:
        raise XlingError(f"language index {max(lang_index)} is outside the model's {n_langs} language "
                         f"embeddings; use the tokenizer the model was trained with")
    todo = sorted((i for i, s in enumerate(sources) if len(s)), key=lambda i: len(sources[i]))
    K = cfg.num_beams
    for k in range(0, len(todo), cfg.decode_batch):
        rows = todo[k:k + cfg.decode_batch]
        prompts = [[src_tag, *list(sources[i])[-limit:], EOS_ID, tgt_tag] for i in rows]
        langs = None
        if n_langs:
            langs = [[lang_index[0]] * (len(p) - 1) + [lang_index[1]] for p in prompts]
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
    out = translate_ids(for_precision(model, cfg.precision), ids, tags[src], tags[tgt], cfg,
                        lang_index=(lang_index(tokenizer, src), lang_index(tokenizer, tgt)))
    return [" ".join(tokenizer.decode(o, skip_special_tokens=True).split()) for o in out]
