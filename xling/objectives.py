"""Pretraining objectives: each makes its batches from the shards (with `xling.batches`) and maps
(model, batch) -> (loss, stats).

    objs = build_objectives({"clm": 1.0, "tlm": 0.5}, shards, d_model=256)
    batch = objs["tlm"].make_batch(shards, "train", rng, batch_size=32, seq_len=128)
    loss, stats = objs["tlm"](model, batch)      # stats: loss, n_tokens, n_masked, acc

Objectives (each an `nn.Module`; NSP owns its binary head, distill its projection):

    clm          packed monolingual stream `<lang> s1 </s> s2 </s> ...`, causal, next-token loss
    mlm          the same stream, bidirectional, BERT/XLM 80/10/10 masking of 15% of positions
    tlm          translation pair `</s> x </s> </s> y </s>`, positions restart at y (XLM), masked both sides
    mt           translation pair `<x_lang> x </s> <y_lang> y </s>`, causal, loss on y only (the format
                 `xling translate` fine-tunes and decodes: pretraining on it is translation from step 0)
    nsp          `<s> a </s> b </s>`: is b the next segment of a (50%) or a random one (BERT)
    xnsp         the same with b in another language: is b the translation of a (XLM's variant)
    contrastive  symmetric InfoNCE over in-batch translation pairs (LaBSE / sentence-transformers MNRL)
    distill      multilingual knowledge distillation (Reimers & Gurevych 2020): English and its translation, pooled
                 as contrastive and projected by its own head, both regress onto a teacher's vector of the English
                 side (cached once per corpus by xling.teacher); owns the projection head

Randomness comes only from the numpy Generator given to `make_batch`, so the trainer reproduces the
data order exactly from its saved rng state. Languages are drawn with q ∝ p^alpha over segment counts,
language pairs with q ∝ p^pair_alpha over pair counts (`xling.corpus.sampling_probs`), each over the
split asked for. Fixed language shares (`lang_shares={"it": 0.5}`, train.lang_shares: continued
pretraining of a new language with replay of the old ones) give the languages, or the pairs, involving
`it` half the mass together, in proportion to their q, and every other language or pair the other half
(`xling.batches.with_shares`; distill draws among its pivot's pairs). Padded objectives round their
length up to a multiple of `pad_multiple` (few distinct shapes for a compiled model) and, by default,
batch by length (draw 4x the batch, sort, take a window). Held-out bits per character is `xling.heldout`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xling.batches import (
    IGNORE,
    ShardView,
    check_shares,
    draw,
    length_window,
    longer_side,
    mask_tokens,
    mt_batch,
    next_segment_examples,
    packed_rows,
    pair_name,
    pair_rows,
    pivot_pair_rows,
    resolve_pairs,
    segment_pair_batch,
    sides_batch,
    smoothing_weights,
    split_pair,
    tlm_batch,
    token_counts,
    translation_examples,
    translation_items,
)
from xling.distributed import unwrap
from xling.encode import mean_pool
from xling.errors import XlingError
from xling.losses import cross_entropy, distill_loss, info_nce, span_loss

# ---------------------------------------------------------------------------- helpers

def _run(model: nn.Module, batch: dict, causal: bool) -> torch.Tensor:
    """Hidden states (B, T, D) for a batch (the model ignores lang_ids when it has no language embeddings)."""
    return model(batch["idx"], causal=causal, positions=batch.get("positions"),
                 lang_ids=batch.get("lang_ids"), pad_mask=batch.get("pad_mask"))


def _to_device(batch: dict, model: nn.Module) -> dict:
    dev = next(model.parameters()).device
    return {k: v.to(dev, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class Objective(nn.Module):
    """Base: the shards cache and language/pair choice. Subclasses define make_batch and forward."""

    name = "objective"
    uses_pairs = False
    # batches padded to the longest row (a multiple of pad_multiple), so their length varies: compiled
    # with a symbolic sequence length (one graph for every length) rather than one graph per length
    variable_length = False

    def __init__(self, alpha: float = 0.3):
        super().__init__()
        self.alpha = alpha  # language (or pair) sampling exponent
        self.pairs: list[str] | None = None  # pair objectives: the pairs drawn from (None = every pair)
        self.mixed_langs = True  # monolingual streams: each row's language drawn on its own (see stream)
        self.shares: dict[str, float] = {}  # train.lang_shares: language -> fixed share of the draws (`sample`)
        self._data: ShardView | None = None

    @classmethod
    def from_settings(cls, s: Settings) -> Objective:
        """The objective as `build_objectives` makes it from its settings (subclasses with more arguments override)."""
        return cls(s.sampling_alpha(cls))

    def data(self, shards) -> ShardView:
        if self._data is None or self._data.shards is not shards:
            self._data = ShardView(shards)
        return self._data

    def sample(self, d: ShardView, counts: dict[str, int], rng: np.random.Generator, what: str, split: str,
               n: int | None = None) -> str | list[str]:
        """`draw` of a language or pair name (n of them if given) with this objective's alpha and shares."""
        return draw(counts, self.alpha, rng, what, split, n, shares=self.shares, langs=d.shards.langs)

    def pick_lang(self, d: ShardView, split: str, rng: np.random.Generator, lang: str | None,
                  min_segments: int = 1) -> str:
        if lang is not None:
            if d.lang_counts(split).get(lang, 0) < min_segments:
                raise XlingError(f"objective {self.name}: language {lang!r} has too few {split} segments")
            return lang
        counts = {k: (n if n >= min_segments else 0) for k, n in d.lang_counts(split).items()}
        return self.sample(d, counts, rng, "segments", split)

    def pick_pair(self, d: ShardView, split: str, rng: np.random.Generator, pair: str | None) -> tuple[str, str]:
        if pair is None:
            counts = d.pair_counts(split)
            if self.pairs is not None:  # train.pairs: only these
                counts = {k: counts.get(k, 0) for k in self.pairs}
            pair = self.sample(d, counts, rng, "translation pairs", split)
        a, b = split_pair(pair, d.shards.langs) or (pair, "")
        if b == "" or not len(d.pairs(split, a, b)):
            raise XlingError(f"objective {self.name}: no {split} translation pairs for {pair}")
        return a, b

    def valid_pairs(self, shards, names: list[str], pivot: str) -> list[str]:
        """Which of the valid split's pairs (names in shard order) the validation loss scores: the pivot's pairs when
        it has any (7 of the demo's 28 pairs, a quarter of the cost), else all."""
        return [p for p in names if p.startswith(pivot + "-") or p.endswith("-" + pivot)] or names

    def stream(self, shards, split: str, rng: np.random.Generator, batch_size: int, length: int,
               lang: str | None):
        """(data, lang, rows (B, length) packed streams from random start segments, lang_ids (B, length)).

        With `lang` every row is that language. Without, each row's language is drawn on its own (alpha
        sampling) when `self.mixed_langs`, so every step trains the output layer on every language (lang is
        then None unless all rows drew the same); else one language for the whole batch (XLM's batches)."""
        d = self.data(shards)
        if lang is not None or not self.mixed_langs:
            langs = [self.pick_lang(d, split, rng, lang)] * batch_size
        else:
            langs = self.sample(d, d.lang_counts(split), rng, "segments", split, n=batch_size)
        rows, lang_ids = packed_rows(d, split, langs, rng, length)
        return d, (langs[0] if len(set(langs)) == 1 else None), rows, lang_ids

    def translation_items(self, d: ShardView, split: str, rng: np.random.Generator, batch_size: int,
                          pair: str | None) -> tuple[str, str, list[tuple[str, np.ndarray, str, np.ndarray]]]:
        """(a, b, [(x_lang, x, y_lang, y), ...]): a batch of one pair's translations, each direction half
        the time, length-batched when `self.length_batching` (TLM, MT)."""
        a, b = self.pick_pair(d, split, rng, pair)
        rows = pair_rows(d, split, a, b, rng, batch_size, lambda r: d.seg_lengths(split, a, r[:, 0])
                         + d.seg_lengths(split, b, r[:, 1]), self.length_batching)
        return a, b, translation_items(d, split, a, b, rows, rng)


# ---------------------------------------------------------------------------- monolingual streams


class CLM(Objective):
    """Causal LM on packed streams; targets = inputs shifted by one; loss on every position after the tag."""

    name = "clm"

    def make_batch(self, shards, split: str, rng: np.random.Generator, batch_size: int, seq_len: int,
                   *, lang: str | None = None) -> dict:
        _, lang, rows, lang_ids = self.stream(shards, split, rng, batch_size, seq_len + 1, lang)
        x = torch.from_numpy(rows)
        # every tensor contiguous: a view input (lang_ids[:, :-1]) made torch.compile trace SDPA's flash kernel
        # even under sdpa_kernel(MATH), 1.16x slower on CPU (see TrainModule.forward)
        return {"idx": x[:, :-1].contiguous(), "targets": x[:, 1:].contiguous(),
                "lang_ids": lang_ids[:, :-1].contiguous(), "lang": lang, "n_tokens": batch_size * seq_len}

    def forward(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        batch = _to_device(batch, model)
        hidden = _run(model, batch, causal=True)  # (B, T, D)
        logits = unwrap(model).lm_head(hidden)  # (B, T, V)
        per_token = cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), reduction="none")
        row_loss = per_token.view(batch["targets"].shape).mean(1)  # (B,): rows are equally long
        loss = row_loss.mean()
        # rows of a mixed batch have languages of their own: the trainer logs their losses per language
        return loss, {"loss": loss.item(), "n_tokens": batch["n_tokens"], "row_loss": row_loss.detach(),
                      "row_lang": batch["lang_ids"][:, 0]}


class _MaskedLM(Objective):
    """Shared by MLM and TLM: masking rule and the loss on chosen positions only (bidirectional)."""

    def __init__(self, alpha: float = 0.3, prob: float = 0.15, smoothing: float = 0.0,
                 counts: np.ndarray | None = None):
        super().__init__(alpha)
        self.prob = prob  # share of eligible positions chosen
        self.smoothing = smoothing  # XLM sample_alpha (0 = uniform choice of positions)
        self.counts = counts  # (V,) train token counts for smoothing; computed from the shards if None
        self._weights: np.ndarray | None = None

    @classmethod
    def from_settings(cls, s: Settings) -> Objective:
        return cls(s.sampling_alpha(cls), s.mlm_prob, s.mlm_smoothing, s.counts)

    def mask(self, d: ShardView, ids: np.ndarray, special: np.ndarray, rng: np.random.Generator):
        weights = None
        if self.smoothing > 0:
            if self._weights is None:
                counts = self.counts if self.counts is not None else token_counts(d.shards, "train")
                self._weights = smoothing_weights(counts, self.smoothing)
            weights = self._weights
        special = special | np.isin(ids, d.special_ids)
        inputs, targets = mask_tokens(ids, special, rng, mask_id=d.mask, real_ids=d.real_ids,
                                      prob=self.prob, weights=weights)
        return torch.from_numpy(inputs), torch.from_numpy(targets)

    def forward(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        batch = _to_device(batch, model)
        hidden = _run(model, batch, causal=False)  # (B, T, D)
        chosen = batch["targets"] != IGNORE  # (B, T)
        logits = unwrap(model).lm_head(hidden[chosen])  # (n_masked, V): only chosen positions
        target = batch["targets"][chosen]
        loss = cross_entropy(logits, target)
        acc = (logits.argmax(-1) == target).float().mean()
        return loss, {"loss": loss.item(), "n_tokens": batch["n_tokens"], "n_masked": int(target.numel()),
                      "acc": acc.item()}


class MLM(_MaskedLM):
    """Masked LM on packed monolingual streams `<lang> s1 </s> s2 </s> ...` of seq_len tokens."""

    name = "mlm"

    def make_batch(self, shards, split: str, rng: np.random.Generator, batch_size: int, seq_len: int,
                   *, lang: str | None = None) -> dict:
        d, lang, rows, lang_ids = self.stream(shards, split, rng, batch_size, seq_len, lang)
        idx, targets = self.mask(d, rows, np.zeros(rows.shape, dtype=bool), rng)
        return {"idx": idx, "targets": targets, "lang_ids": lang_ids, "lang": lang,
                "n_tokens": batch_size * seq_len}


# ---------------------------------------------------------------------------- pair objectives

class TLM(_MaskedLM):
    """XLM translation LM: `</s> x </s> </s> y </s>`, positions restart at 0 on y, masking in both."""

    name = "tlm"
    uses_pairs = True
    variable_length = True

    def __init__(self, alpha: float = 0.3, prob: float = 0.15, smoothing: float = 0.0,
                 counts: np.ndarray | None = None, length_batching: bool = True, pad_multiple: int = 16):
        super().__init__(alpha, prob, smoothing, counts)
        self.length_batching = length_batching  # sort a 4x pool by length, take a window
        self.pad_multiple = pad_multiple  # round the padded length up to this

    @classmethod
    def from_settings(cls, s: Settings) -> Objective:
        return cls(s.pair_alpha, s.mlm_prob, s.mlm_smoothing, s.counts, s.length_batching, s.pad_multiple)

    def make_batch(self, shards, split: str, rng: np.random.Generator, batch_size: int, seq_len: int,
                   *, pair: str | None = None) -> dict:
        d = self.data(shards)
        a, b, items = self.translation_items(d, split, rng, batch_size, pair)
        out = tlm_batch(d, items, seq_len, self.pad_multiple)
        idx, targets = self.mask(d, out["idx"].numpy(), ~out["pad_mask"].numpy(), rng)
        out.update(idx=idx, targets=targets, pair=f"{a}-{b}", n_tokens=int(out["pad_mask"].sum()))
        return out


class MT(Objective):
    """Causal translation LM: `<x_lang> x </s> <y_lang> y </s>`, next-token loss on `y </s>` only.

    Exactly the prompt format of tasks/translate/data.py, over every language pair of the corpus (pairs drawn
    with pair_alpha, each direction half the time), so a pretrained model conditions on a source before
    any fine-tune. Inputs are right-padded and causal: padding is never attended by a real position.
    """

    name = "mt"
    uses_pairs = True
    variable_length = True

    def __init__(self, alpha: float = 0.3, length_batching: bool = True, pad_multiple: int = 16):
        super().__init__(alpha)
        self.length_batching = length_batching
        self.pad_multiple = pad_multiple

    @classmethod
    def from_settings(cls, s: Settings) -> Objective:
        return cls(s.pair_alpha, s.length_batching, s.pad_multiple)

    def make_batch(self, shards, split: str, rng: np.random.Generator, batch_size: int, seq_len: int,
                   *, pair: str | None = None) -> dict:
        d = self.data(shards)
        a, b, items = self.translation_items(d, split, rng, batch_size, pair)
        return {**mt_batch(d, items, seq_len, self.pad_multiple), "pair": f"{a}-{b}"}

    def forward(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        batch = _to_device(batch, model)
        hidden = _run(model, batch, causal=True)  # (B, T, D)
        loss = span_loss(unwrap(model).lm_head, hidden, batch)  # the output layer on y </s> only
        return loss, {"loss": loss.item(), "n_tokens": batch["n_tokens"]}


class _Binary(Objective):
    """A yes/no question about `<s> a </s> b </s>`: Linear head on the first position's hidden state."""

    variable_length = True

    def __init__(self, d_model: int, alpha: float = 0.3, length_batching: bool = True,
                 pad_multiple: int = 16):
        super().__init__(alpha)
        self.head = nn.Linear(d_model, 2)
        nn.init.normal_(self.head.weight, std=0.02)  # BERT's head init: logits ~0, loss ~ln 2 at start
        nn.init.zeros_(self.head.bias)
        self.length_batching = length_batching
        self.pad_multiple = pad_multiple

    @classmethod
    def from_settings(cls, s: Settings) -> Objective:
        return cls(s.head_dim(cls.name), s.sampling_alpha(cls), s.length_batching, s.pad_multiple)

    def build(self, d: ShardView, items: list, labels: np.ndarray, seq_len: int, reset_positions: bool) -> dict:
        """items: (tokens a, lang a, tokens b, lang b) per example; labels (B,) 1 = yes."""
        out = segment_pair_batch(d, items, seq_len, self.pad_multiple, reset_positions)
        out.update(labels=torch.from_numpy(labels.astype(np.int64)), n_tokens=int(out["pad_mask"].sum()))
        return out

    def order(self, lengths: np.ndarray, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        """Which of the pool's examples form the batch (length window, or the first batch_size)."""
        return length_window(lengths, rng, batch_size) if self.length_batching else np.arange(batch_size)

    def forward(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        batch = _to_device(batch, model)
        hidden = _run(model, batch, causal=False)  # (B, T, D)
        logits = self.head(hidden[:, 0]).float()  # (B, 2): the <s> position
        loss = F.cross_entropy(logits, batch["labels"])
        acc = (logits.argmax(-1) == batch["labels"]).float().mean()
        return loss, {"loss": loss.item(), "n_tokens": batch["n_tokens"], "acc": acc.item()}


class NSP(_Binary):
    """BERT next-segment prediction within one language: label 1 = b is the segment after a in the shard."""

    name = "nsp"

    def make_batch(self, shards, split: str, rng: np.random.Generator, batch_size: int, seq_len: int,
                   *, lang: str | None = None) -> dict:
        d = self.data(shards)
        lang = self.pick_lang(d, split, rng, lang, min_segments=2)
        pool = 4 * batch_size if self.length_batching else batch_size
        ia, ib, labels = next_segment_examples(d, split, lang, rng, pool)
        keep = self.order(d.seg_lengths(split, lang, ia) + d.seg_lengths(split, lang, ib), rng, batch_size)
        items = [(d.seg(split, lang, ia[k]), lang, d.seg(split, lang, ib[k]), lang) for k in keep]
        out = self.build(d, items, labels[keep], seq_len, reset_positions=False)
        out["lang"] = lang
        return out


class XNSP(_Binary):
    """Cross-lingual variant: label 1 = b (language L2) is the translation of a (L1), 0 = a random L2 segment.

    Positions restart at 0 on b, as in TLM; each example's direction (which language is a) is random.
    """

    name = "xnsp"
    uses_pairs = True

    def make_batch(self, shards, split: str, rng: np.random.Generator, batch_size: int, seq_len: int,
                   *, pair: str | None = None) -> dict:
        d = self.data(shards)
        a, b = self.pick_pair(d, split, rng, pair)
        n_a, n_b = d.lang_counts(split)[a], d.lang_counts(split)[b]
        if min(n_a, n_b) < 2:
            raise XlingError(f"objective xnsp needs at least 2 {split} segments in {a} and {b} for negatives")
        pool = 4 * batch_size if self.length_batching else batch_size
        a_first, i1, i2, labels = translation_examples(d, split, a, b, rng, pool)
        l1 = [a if f else b for f in a_first]
        l2 = [b if f else a for f in a_first]
        lengths = (d.seg_lengths(split, a, np.where(a_first, i1, i2))  # indices into a's segments
                   + d.seg_lengths(split, b, np.where(a_first, i2, i1)))
        keep = self.order(lengths, rng, batch_size)
        built = [(d.seg(split, l1[k], i1[k]), l1[k], d.seg(split, l2[k], i2[k]), l2[k]) for k in keep]
        out = self.build(d, built, labels[keep], seq_len, reset_positions=True)
        out["pair"] = f"{a}-{b}"
        return out


class Contrastive(Objective):
    """Translation pairs encoded separately (`<lang> x </s>`, bidirectional), mean-pooled, InfoNCE.

    Both sides go through the model as one batch of 2B rows (rows 0..B-1 = side a, B..2B-1 = side b).
    """

    name = "contrastive"
    uses_pairs = True
    variable_length = True

    def __init__(self, alpha: float = 0.3, tau: float = 0.05, margin: float = 0.0,
                 length_batching: bool = True, pad_multiple: int = 16):
        super().__init__(alpha)
        self.tau = tau  # temperature (sentence-transformers scale 20 = 0.05)
        self.margin = margin  # LaBSE additive margin on the positives
        self.length_batching = length_batching
        self.pad_multiple = pad_multiple

    @classmethod
    def from_settings(cls, s: Settings) -> Objective:
        return cls(s.pair_alpha, s.tau, s.margin, s.length_batching, s.pad_multiple)

    def make_batch(self, shards, split: str, rng: np.random.Generator, batch_size: int, seq_len: int,
                   *, pair: str | None = None) -> dict:
        d = self.data(shards)
        a, b = self.pick_pair(d, split, rng, pair)
        rows = pair_rows(d, split, a, b, rng, batch_size, longer_side(d, split, a, b), self.length_batching)
        return sides_batch(d, split, a, b, rows, seq_len, self.pad_multiple)

    def forward(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        batch = _to_device(batch, model)
        hidden = _run(model, batch, causal=False)  # (2B, T, D)
        z = mean_pool(hidden, batch["pad_mask"])  # (2B, D)
        za, zb = z.chunk(2)
        loss, acc = info_nce(za, zb, self.tau, self.margin)
        return loss, {"loss": loss.item(), "n_tokens": batch["n_tokens"], "acc": acc.item()}


class Distill(Objective):
    """Multilingual knowledge distillation (Reimers & Gurevych 2020): student(en) ≈ teacher(en) ≈ student(x).

    A batch is B translation pairs (en, x) of one language x (drawn by pair_alpha over the pairs whose English side
    has a teacher vector), laid out as contrastive's (`sides_batch`: rows 0..B-1 English, B..2B-1 language x, each
    `<lang> s </s>`, bidirectional) plus "teacher" (B, D_t): the cached teacher vectors of the English side
    (`xling.teacher`). The pooled student vectors (`mean_pool`, exactly as contrastive) go through the projection
    head P (d_model -> D_t, with bias), which this objective owns: the trainer optimises it and the checkpoint
    keeps it (heads.safetensors, `distill.proj.*`), as the NSP head. The loss is `distill_loss`.
    """

    name = "distill"
    uses_pairs = True
    variable_length = True

    def __init__(self, d_model: int, targets: dict, alpha: float = 0.3, length_batching: bool = True,
                 pad_multiple: int = 16, pivot: str = "en"):
        super().__init__(alpha)
        if "train" not in targets or not len(targets["train"].ids):
            raise XlingError(f"objective distill needs English translation pairs with teacher vectors; the corpus "
                             f"has no {pivot} pairs in its train split")
        self.targets = targets  # split -> xling.teacher.TeacherVectors (a plain attribute: not in the state dict)
        self.proj = nn.Linear(d_model, targets["train"].dim)  # P: pooled student -> teacher space
        self.pivot = pivot
        self.length_batching = length_batching
        self.pad_multiple = pad_multiple
        self._rows: dict = {}  # "data": the ShardView they index, split -> {other language: (M, 2) rows}

    @classmethod
    def from_settings(cls, s: Settings) -> Objective:
        d_model = s.head_dim(cls.name)
        if s.teacher is None:
            raise ValueError("build_objectives: objective distill needs its teacher vectors (teacher=)")
        return cls(d_model, s.teacher, s.pair_alpha, s.length_batching, s.pad_multiple)

    def pivot_rows(self, d: ShardView, split: str) -> dict[str, np.ndarray]:
        """{x: (M, 2) rows (pivot segment, x segment)} of the pairs whose pivot side has a teacher vector."""
        if self._rows.get("data") is not d:  # another shards object: start over
            self._rows = {"data": d}
        if split not in self._rows:
            table = self.targets.get(split)
            self._rows[split] = {} if table is None else pivot_pair_rows(d, split, self.pivot, table.covers, self.pairs)
        return self._rows[split]

    def valid_pairs(self, shards, names: list[str], pivot: str) -> list[str]:
        """Only the pivot's pairs whose pivot side has teacher vectors (none: no validation loss)."""
        have = self.pivot_rows(self.data(shards), "valid")
        pairs = [split_pair(p, shards.langs) or ("", "") for p in names]
        return [p for p, (a, b) in zip(names, pairs, strict=True) if self.pivot in (a, b) and {a, b} - {self.pivot}
                <= set(have)]

    def make_batch(self, shards, split: str, rng: np.random.Generator, batch_size: int, seq_len: int,
                   *, pair: str | None = None) -> dict:
        d = self.data(shards)
        rows_by = self.pivot_rows(d, split)
        if pair is None:  # drawn by pair name, so that lang_shares see both sides
            pair = self.sample(d, {pair_name(d.shards.langs, self.pivot, x): len(v) for x, v in rows_by.items()},
                               rng, f"{self.pivot} translation pairs with teacher vectors", split)
        a, b = split_pair(pair, d.shards.langs) or ("", "")
        x = b if a == self.pivot else a
        if self.pivot not in (a, b) or x not in rows_by:
            raise XlingError(f"objective distill: no {split} pairs of {pair} with teacher vectors")
        rows = pair_rows(d, split, self.pivot, x, rng, batch_size, longer_side(d, split, self.pivot, x),
                         self.length_batching, pairs=rows_by[x])
        out = sides_batch(d, split, self.pivot, x, rows, seq_len, self.pad_multiple)
        out["pair"] = pair_name(d.shards.langs, self.pivot, x)
        out["teacher"] = torch.from_numpy(self.targets[split].lookup(rows[:, 0]))  # (B, D_t)
        return out

    def forward(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        batch = _to_device(batch, model)
        hidden = _run(model, batch, causal=False)  # (2B, T, D)
        z = mean_pool(hidden, batch["pad_mask"])  # (2B, D)
        loss, cos_en, cos_x = distill_loss(self.proj(z), batch["teacher"])
        return loss, {"loss": loss.item(), "n_tokens": batch["n_tokens"], "cos_en": cos_en.item(),
                      "cos_x": cos_x.item()}


# ---------------------------------------------------------------------------- building

OBJECTIVES: dict[str, type[Objective]] = {"clm": CLM, "mlm": MLM, "tlm": TLM, "mt": MT, "nsp": NSP,
                                          "xnsp": XNSP, "contrastive": Contrastive, "distill": Distill}


@dataclass(frozen=True)
class Settings:
    """`build_objectives`' settings, read by each objective's `from_settings`."""

    alpha: float = 0.3
    pair_alpha: float = 0.3
    mlm_prob: float = 0.15
    mlm_smoothing: float = 0.0
    counts: np.ndarray | None = None  # (V,) train token counts, when mlm or tlm smooth their masking
    tau: float = 0.05
    margin: float = 0.0
    d_model: int | None = None
    length_batching: bool = True
    pad_multiple: int = 16
    teacher: dict | None = None

    def sampling_alpha(self, cls: type[Objective]) -> float:
        """Monolingual objectives draw languages with alpha, pair objectives draw pairs with pair_alpha."""
        return self.pair_alpha if cls.uses_pairs else self.alpha

    def head_dim(self, name: str) -> int:
        if not self.d_model:
            raise ValueError(f"build_objectives: objective {name} needs d_model for its head")
        return self.d_model


def build_objectives(weights: dict[str, float], shards, *, alpha: float = 0.3, pair_alpha: float = 0.3,
                     mlm_prob: float = 0.15, mlm_smoothing: float = 0.0, tau: float = 0.05,
                     margin: float = 0.0, d_model: int | None = None, length_batching: bool = True,
                     pad_multiple: int = 16, pairs: list[str] | None = None, mixed_langs: bool = True,
                     lang_shares: dict[str, float] | None = None, teacher: dict | None = None) -> dict[str, Objective]:
    """Objectives with a positive weight, by name (weight 0 switches one off). Checks the shards fit them.
    pairs: the language pairs the pair objectives draw from (`resolve_pairs`); None or [] = every pair.
    mixed_langs: monolingual batches (clm, mlm) draw each row's language on its own (`Objective.stream`).
    lang_shares: language -> fixed share of every objective's draws (`xling.batches.with_shares`); keys are languages
    with train segments (train.langs hides the others).
    teacher: distill's teacher vectors, {split: xling.teacher.TeacherVectors} (`xling.pretrain` builds them)."""
    unknown = [k for k in weights if k not in OBJECTIVES]
    if unknown:
        raise XlingError(f"unknown objective(s) {', '.join(map(repr, unknown))} in train.objectives; "
                         f"choose from {', '.join(OBJECTIVES)}")
    bad = [k for k, w in weights.items() if not (w >= 0 and math.isfinite(w))]
    if bad:
        raise XlingError(f"objective weight(s) for {', '.join(bad)} must be finite and >= 0")
    active = [k for k, w in weights.items() if w > 0]
    if not active:
        raise XlingError("no objective has a positive weight in train.objectives; give one a weight > 0")
    if not 0 < mlm_prob < 1 or mlm_smoothing < 0 or tau <= 0 or pad_multiple < 1:
        raise XlingError("objective settings need 0 < mlm_prob < 1, mlm_smoothing >= 0, tau > 0 and "
                         "pad_multiple >= 1")
    check_shares(lang_shares or {}, [lg for lg in shards.langs if shards.num_segments("train", lg)])
    needs_pairs = any(OBJECTIVES[k].uses_pairs for k in active)
    n_pairs = sum(ShardView(shards).pair_counts("train").values()) if needs_pairs else 0
    counts = token_counts(shards, "train") if mlm_smoothing > 0 and {"mlm", "tlm"} & set(active) else None
    settings = Settings(alpha=alpha, pair_alpha=pair_alpha, mlm_prob=mlm_prob, mlm_smoothing=mlm_smoothing,
                        counts=counts, tau=tau, margin=margin, d_model=d_model, length_batching=length_batching,
                        pad_multiple=pad_multiple, teacher=teacher)
    out: dict[str, Objective] = {}
    for name in active:
        if OBJECTIVES[name].uses_pairs and n_pairs == 0:
            raise XlingError(f"objective {name} needs translation pairs but the corpus has none; use an "
                             f"aligned source (bible, tsv, or segments sharing keys across languages) or "
                             f"drop {name} from train.objectives")
        out[name] = OBJECTIVES[name].from_settings(settings)
        out[name].mixed_langs = mixed_langs
        out[name].shares = dict(lang_shares or {})
    if pairs and needs_pairs:
        chosen = resolve_pairs(pairs, shards)
        for obj in out.values():
            if obj.uses_pairs:
                obj.pairs = chosen
    return out
