"""Held-out bits per character of a causal model: the number the trainer's validation and `xling evaluate` report.

    nats, chars = clm_eval(model, shards, "test", "fr", seq_len=128, max_tokens=20_000)
    bpc = bits_per_char(nats, chars)

Scores the same segments as the count-based baselines of `xling.ngram` (`shards.scored_prefix`), so the
model's number and theirs compare the same text.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from xling.batches import IGNORE, ShardView, pad_right
from xling.distributed import unwrap
from xling.errors import XlingError
from xling.losses import cross_entropy
from xling.shards import scored_prefix


@torch.no_grad()
def clm_eval(model: nn.Module, shards, split: str, lang: str, seq_len: int, max_tokens: int,
             batch_size: int = 32, pad_multiple: int = 16) -> tuple[float, int]:
    """(sum of next-token NLL in nats, number of characters) over the split's segments of one language.

    Each segment is scored alone as `<lang> segment </s>`: the tag is context only (never predicted),
    the `</s>` is predicted and its NLL is included, the character count is the segment text's (without
    any end-of-line). Segments are taken in shard order until `max_tokens` targets have been scored
    (max_tokens <= 0: all; `shards.scored_prefix`, the rule the n-gram baselines share); one longer than
    seq_len targets is scored in consecutive windows of seq_len (later windows without the earlier context).
    Batches hold windows of similar length, right-padded to a multiple of `pad_multiple` (at most seq_len).
    Bits per character = nats / ln 2 / chars (`bits_per_char`). The model is put in eval mode for the call
    and restored afterwards.
    """
    d = ShardView(shards)
    tok, off = d.arrays(split, lang)
    n_seg = len(off) - 1
    if n_seg == 0:
        raise XlingError(f"no {split} segments for language {lang!r}; rebuild the shards with that split")
    n_used, chars = scored_prefix(shards, split, lang, max_tokens)  # the segments every bpc number scores
    windows = []
    for i in range(n_used):
        full = np.concatenate([[d.tag(lang)], np.asarray(tok[off[i]:off[i + 1]], np.int64), [d.eos]])
        for s in range(0, len(full) - 1, seq_len):  # windows of inputs full[s:s+T], targets full[s+1:s+T+1]
            windows.append(full[s:s + seq_len + 1])
    order = np.argsort([len(w) for w in windows], kind="stable")  # similar lengths share a batch
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    total = 0.0
    try:
        for k in range(0, len(order), batch_size):
            ws = [windows[j] for j in order[k:k + batch_size]]
            x, _ = pad_right([w[:-1] for w in ws], d.pad, multiple=pad_multiple, cap=seq_len)  # (b, T) inputs
            y, _ = pad_right([w[1:] for w in ws], IGNORE, width=x.shape[1])  # (b, T) targets
            lang_ids = torch.full_like(x, d.lang_index(lang))
            hidden = model(x.to(dev), causal=True, lang_ids=lang_ids.to(dev))  # right padding: causal rows never see it
            logits = unwrap(model).lm_head(hidden)  # (b, T, V)
            total += cross_entropy(logits.flatten(0, 1), y.to(dev).flatten(), reduction="sum").item()
    finally:
        model.train(was_training)
    return total, chars


def bits_per_char(nats: float, chars: int) -> float:
    """Bits per character from `clm_eval`'s (nats, characters)."""
    return nats / math.log(2) / max(chars, 1)
