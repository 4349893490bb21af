"""Translation examples and their batches: `<src> x </s> <tgt> y </s>` from the corpus's pairs or a TSV file.

    examples, skipped = corpus_examples(shards, [("en", "fr")], "train", max_len=128)
    batch = make_batch(examples[:32])   # idx, targets (IGNORE outside the target), lang_ids, prefix_len, span
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from xling.batches import IGNORE, pad_right, target_span
from xling.errors import XlingError
from xling.files import read_lines
from xling.tokenizer import EOS_ID, PAD_ID, lang_ids, lang_index


@dataclass
class Example:
    src: np.ndarray  # source token ids, no specials
    tgt: np.ndarray  # target token ids, no specials
    src_tag: int  # language tag id of the source
    tgt_tag: int
    src_index: int  # language index of the source, its language-embedding row (the position in shards.langs)
    tgt_index: int

    def __len__(self) -> int:  # input tokens: `<src> x </s> <tgt> y` (the final </s> is only a target)
        return len(self.src) + len(self.tgt) + 3

def corpus_examples(shards, directions: list[tuple[str, str]], split: str = "train",
                    max_len: int = 128) -> tuple[list[Example], int]:
    """Both sides of every translation pair of `split`, per direction; (examples, pairs skipped as too long)."""
    out, skipped = [], 0
    for a, b in directions:
        rows = np.asarray(shards.pairs(split, a, b))  # (M, 2)
        ta, oa = shards.tokens(split, a), np.asarray(shards.offsets(split, a))
        tb, ob = shards.tokens(split, b), np.asarray(shards.offsets(split, b))
        tag_a, tag_b = shards.lang_token_ids[a], shards.lang_token_ids[b]
        index_a, index_b = shards.langs.index(a), shards.langs.index(b)
        for i, j in rows:
            ex = Example(ta[oa[i]:oa[i + 1]], tb[ob[j]:ob[j + 1]], tag_a, tag_b, index_a, index_b)
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
    index = {lg: lang_index(tokenizer, lg) for lg in tags}
    out, skipped = [], 0
    for n, line in enumerate(read_lines(path, "parallel TSV file"), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise XlingError(f"parallel TSV file {path} line {n}: expected `source<TAB>target` with two "
                             f"non-empty fields, found {len(parts)} field(s); fix that line")
        x, y = (np.asarray(tokenizer.encode(p.strip(), add_special_tokens=False).ids, np.int64) for p in parts)
        for ex in (Example(x, y, tags[src], tags[tgt], index[src], index[tgt]),
                   Example(y, x, tags[tgt], tags[src], index[tgt], index[src])):
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
    src = torch.tensor([e.src_index for e in examples])[:, None]  # (B, 1)
    tgt = torch.tensor([e.tgt_index for e in examples])[:, None]  # (B, 1)
    # <src> x </s> in the source language, <tgt> y (and the padding after it, never a target) in the target's
    lang = torch.where(torch.arange(idx.shape[1])[None, :] < prefix[:, None], src, tgt)  # (B, T)
    return {"idx": idx, "targets": targets, "lang_ids": lang, "prefix_len": prefix, **target_span(targets)}
