"""Pretraining objectives: batches from the shards and (model, batch) -> (loss, stats).

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
split asked for. Padded objectives round their length up to a multiple of `pad_multiple` (few distinct
shapes for a compiled model) and, by default, batch by length (draw 4x the batch, sort, take a window).

`clm_eval` gives (sum of token NLL in nats, characters) over held-out segments for bits per character.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import combinations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xling.corpus import sampling_probs
from xling.distributed import unwrap
from xling.encode import mean_pool
from xling.errors import XlingError
from xling.shards import scored_prefix

IGNORE = -100  # target of a position without loss (torch cross_entropy's ignore_index)


# ---------------------------------------------------------------------------- masking

def mask_tokens(ids: np.ndarray, special_mask: np.ndarray, rng: np.random.Generator, *, mask_id: int,
                real_ids: np.ndarray, prob: float = 0.15, weights: np.ndarray | None = None,
                mask_frac: float = 0.8, random_frac: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """BERT/XLM masking. Returns (inputs, targets): targets = the original id where chosen, else IGNORE.

    ids (B, T) int; special_mask (B, T) bool, True = never chosen (padding, BOS/EOS, language tags).
    round(prob * n_eligible) positions are chosen per batch (at least one), without replacement; with
    `weights` (V,) position i is drawn with weight weights[ids[i]] (XLM sample_alpha; the exponential-key
    form of weighted sampling without replacement, the same scheme as numpy's `choice(p=, replace=False)`).
    Of the chosen: mask_frac -> mask_id, random_frac -> a uniform draw from `real_ids`, the rest unchanged.
    """
    ids = np.asarray(ids, dtype=np.int64)
    eligible = np.flatnonzero(~np.asarray(special_mask, dtype=bool).reshape(-1))  # flat positions
    inputs, targets = ids.copy(), np.full_like(ids, IGNORE)
    n = eligible.size
    if n == 0:
        return inputs, targets
    k = min(n, max(1, int(prob * n + rng.random())))  # stochastic rounding keeps E[k] = prob * n
    if weights is None:
        keys = rng.random(n)
    else:
        w = np.asarray(weights, dtype=np.float64)[ids.reshape(-1)[eligible]]
        keys = rng.exponential(size=n) / np.maximum(w, 1e-300)  # the k smallest E_i / w_i
    chosen = eligible[np.argpartition(keys, k - 1)[:k]] if k < n else eligible
    flat_in, flat_tg = inputs.reshape(-1), targets.reshape(-1)
    flat_tg[chosen] = ids.reshape(-1)[chosen]
    u = rng.random(k)
    flat_in[chosen[u < mask_frac]] = mask_id
    rand_pos = chosen[(u >= mask_frac) & (u < mask_frac + random_frac)]
    flat_in[rand_pos] = real_ids[rng.integers(0, len(real_ids), size=rand_pos.size)]
    return inputs, targets


def token_counts(shards, split: str = "train") -> np.ndarray:
    """(V,) int64: how often each token id occurs in the split, over all languages (for smoothing)."""
    counts = np.zeros(shards.vocab_size, dtype=np.int64)
    for lang in shards.langs:
        if shards.num_segments(split, lang):
            counts += np.bincount(np.asarray(shards.tokens(split, lang)), minlength=shards.vocab_size)
    return counts


def smoothing_weights(counts: np.ndarray, alpha: float) -> np.ndarray:
    """XLM sample_alpha: weight of token t = max(count_t, 1)^(-alpha); alpha 0 = uniform."""
    return np.maximum(np.asarray(counts, dtype=np.float64), 1.0) ** (-alpha)


# ---------------------------------------------------------------------------- contrastive loss

def info_nce(za: torch.Tensor, zb: torch.Tensor, tau: float = 0.05,
             margin: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE over in-batch negatives. za, zb (B, D) pooled, row i of each a translation pair.

    Rows are L2-normalised; scores S = za zb^T; LaBSE's additive margin subtracts `margin` from the
    positives (diagonal) before scaling by 1/tau. loss = (CE(S, diag) + CE(S^T, diag)) / 2.
    Returns (loss, top-1 accuracy averaged over both directions).
    """
    za, zb = F.normalize(za.float(), dim=-1), F.normalize(zb.float(), dim=-1)
    sim = za @ zb.T  # (B, B) cosine
    target = torch.arange(sim.size(0), device=sim.device)
    logits = (sim - margin * torch.eye(sim.size(0), device=sim.device)) / tau
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    acc = ((sim.argmax(1) == target).float().mean() + (sim.argmax(0) == target).float().mean()) / 2
    return loss, acc


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Multilingual distillation loss. student (2B, D_t): projected pooled vectors, rows 0..B-1 of the English side,
    B..2B-1 of its translations; teacher (B, D_t): unit teacher vectors of the English side.

    loss = ||û_en - t||^2 + ||û_x - t||^2, each averaged over the B rows, û = u / ||u||: the two MSE terms of
    Reimers & Gurevych with the student's output L2-normalised and the squared error summed over the D_t
    dimensions (torch's per-element MSE times D_t). With unit vectors each term is 2 - 2 cos(u, t): 0 when the
    directions agree, about 2 at the start (cos ~ 0), at most 4; the sum starts near 4, the size of contrastive's
    InfoNCE over 64 rows (ln 64 = 4.2) and below a CLM's ln |V|. Per-element MSE would be 2 / 512 = 0.004 at the
    start for USE, too small beside the other objectives' losses in one AdamW. Normalising loses nothing (the
    teacher's vectors are all unit length, so only their directions carry information), makes the loss independent
    of the pooled vectors' norm (which the other objectives move) and trains what retrieval scores: cosine.
    Returns (loss, mean cos of the English side, mean cos of the other side) to the teacher.
    """
    u = F.normalize(student.float(), dim=-1)
    t = teacher.float()
    cos = (u * t.repeat(2, 1)).sum(-1)  # (2B,): t is unit length
    err = (u - t.repeat(2, 1)).pow(2).sum(-1)  # (2B,) = 2 - 2 cos
    ce, cx = cos.chunk(2)
    ee, ex = err.chunk(2)
    return ee.mean() + ex.mean(), ce.mean(), cx.mean()


# ---------------------------------------------------------------------------- helpers

def _run(model: nn.Module, batch: dict, causal: bool) -> torch.Tensor:
    """Hidden states (B, T, D) for a batch (the model ignores lang_ids when it has no language embeddings)."""
    return model(batch["idx"], causal=causal, positions=batch.get("positions"),
                 lang_ids=batch.get("lang_ids"), pad_mask=batch.get("pad_mask"))


def _to_device(batch: dict, model: nn.Module) -> dict:
    dev = next(model.parameters()).device
    return {k: v.to(dev, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple if multiple > 1 else n


def _fit_pair(la: int, lb: int, budget: int) -> tuple[int, int]:
    """Lengths of two segments cut to fit `budget` tokens together, trimming the longer one first."""
    if la + lb <= budget:
        return la, lb
    half = budget // 2
    if la <= half:
        return la, budget - la
    if lb <= half:
        return budget - lb, lb
    return half, budget - half


class _Data:
    """Per-shards cache of token arrays, offsets and counts (the shards object may change between calls)."""

    def __init__(self, shards):
        self.shards = shards
        self._seg: dict = {}
        self._pairs: dict = {}
        sp, tags = shards.specials, shards.lang_token_ids
        special = {int(v) for v in sp.values()} | {int(v) for v in tags.values()}
        self.special_ids = np.array(sorted(special), dtype=np.int64)
        self.real_ids = np.setdiff1d(np.arange(shards.vocab_size, dtype=np.int64), self.special_ids)
        self.pad, self.bos, self.eos, self.mask = (int(sp[k]) for k in ("pad", "bos", "eos", "mask"))

    def lang_index(self, lang: str) -> int:
        return self.shards.langs.index(lang)

    def tag(self, lang: str) -> int:
        return int(self.shards.lang_token_ids[lang])

    def arrays(self, split: str, lang: str) -> tuple[np.ndarray, np.ndarray]:
        key = (split, lang)
        if key not in self._seg:
            n = self.shards.num_segments(split, lang)
            if n:
                off = np.asarray(self.shards.offsets(split, lang), dtype=np.int64)
                self._seg[key] = (self.shards.tokens(split, lang), off)
            else:
                self._seg[key] = (np.zeros(0, np.int64), np.zeros(1, np.int64))
        return self._seg[key]

    def seg(self, split: str, lang: str, i: int) -> np.ndarray:
        tok, off = self.arrays(split, lang)
        return np.asarray(tok[off[i]:off[i + 1]], dtype=np.int64)

    def seg_lengths(self, split: str, lang: str, idx: np.ndarray) -> np.ndarray:
        off = self.arrays(split, lang)[1]
        return off[idx + 1] - off[idx]

    def lang_counts(self, split: str) -> dict[str, int]:
        return {lang: int(self.shards.num_segments(split, lang)) for lang in self.shards.langs}

    def pairs(self, split: str, a: str, b: str) -> np.ndarray:
        key = (split, a, b)
        if key not in self._pairs:
            try:
                self._pairs[key] = np.asarray(self.shards.pairs(split, a, b))
            except XlingError:
                self._pairs[key] = np.zeros((0, 2), dtype=np.int64)
        return self._pairs[key]

    def pair_counts(self, split: str) -> dict[str, int]:
        return {f"{a}-{b}": len(self.pairs(split, a, b)) for a, b in combinations(self.shards.langs, 2)}


def split_pair(pair: str, langs) -> tuple[str, str] | None:
    """"en-fr" -> ("en", "fr"); a code may hold a hyphen (pt-BR), so cut where both halves are languages."""
    cuts = [(pair[:i], pair[i + 1:]) for i, c in enumerate(pair) if c == "-"]
    return next(((a, b) for a, b in cuts if a in langs and b in langs and a != b), None)


def pair_name(langs: list[str], a: str, b: str) -> str:
    """The name of the pair of a and b: "a-b" in the shards' language order (how pairs are stored and logged)."""
    return f"{a}-{b}" if langs.index(a) < langs.index(b) else f"{b}-{a}"


def resolve_pairs(wanted: list[str], shards) -> list[str]:
    """train.pairs -> the shards' pair names ("a-b" in shard language order). "fr-en" names "en-fr", and
    "en-*" every pair of en (a pivot). One XlingError for an unknown language or a pair without train data."""
    langs, counts = shards.langs, _Data(shards).pair_counts("train")
    out: list[str] = []
    for pair in wanted:
        if pair.endswith("-*") and pair[:-2] in langs:
            found = [f"{a}-{b}" for a, b in combinations(langs, 2) if pair[:-2] in (a, b)]
        else:
            ab = split_pair(pair, langs)
            if ab is None:
                raise XlingError(f"train.pairs: {pair!r} is not two of the shards' languages "
                                 f"({', '.join(langs)}) joined by '-', nor 'xx-*'; e.g. pairs = [\"en-*\"]")
            a, b = ab
            found = [f"{a}-{b}" if f"{a}-{b}" in counts else f"{b}-{a}"]  # counts: shard language order
        for name in found:
            if not counts.get(name):
                raise XlingError(f"train.pairs: {name} has no training translation pairs; drop it from "
                                 f"train.pairs or use an aligned corpus")
            if name not in out:
                out.append(name)
    return out


def _draw(counts: dict[str, int], alpha: float, rng: np.random.Generator, what: str, split: str,
          n: int | None = None) -> str | list[str]:
    """One name (or a list of n, drawn independently) with probability q ∝ p^alpha (p ∝ counts), from the caller's
    rng."""
    probs = sampling_probs(counts, alpha)
    names = [k for k, q in probs.items() if q > 0]
    if not names:
        raise XlingError(f"the {split} split has no {what} to sample from; rebuild the shards with more data")
    q = np.array([probs[k] for k in names])
    if n is None:
        return names[rng.choice(len(names), p=q)]
    return [names[i] for i in rng.choice(len(names), size=n, p=q)]


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
        self._data: _Data | None = None

    def data(self, shards) -> _Data:
        if self._data is None or self._data.shards is not shards:
            self._data = _Data(shards)
        return self._data

    def pick_lang(self, d: _Data, split: str, rng: np.random.Generator, lang: str | None,
                  min_segments: int = 1) -> str:
        if lang is not None:
            if d.lang_counts(split).get(lang, 0) < min_segments:
                raise XlingError(f"objective {self.name}: language {lang!r} has too few {split} segments")
            return lang
        counts = {k: (n if n >= min_segments else 0) for k, n in d.lang_counts(split).items()}
        return _draw(counts, self.alpha, rng, "segments", split)

    def pick_pair(self, d: _Data, split: str, rng: np.random.Generator, pair: str | None) -> tuple[str, str]:
        if pair is None:
            counts = d.pair_counts(split)
            if self.pairs is not None:  # train.pairs: only these
                counts = {k: counts.get(k, 0) for k in self.pairs}
            pair = _draw(counts, self.alpha, rng, "translation pairs", split)
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
            langs = _draw(d.lang_counts(split), self.alpha, rng, "segments", split, n=batch_size)
        rows, ids = [], []
        for lg in langs:
            tok, off = d.arrays(split, lg)
            start = int(rng.integers(0, len(off) - 1))  # a random start segment per row
            rows.append(pack_stream(tok, off, start, length, d.tag(lg), d.eos))
            ids.append(d.lang_index(lg))
        lang_ids = torch.tensor(ids, dtype=torch.long)[:, None].expand(batch_size, length).contiguous()
        return d, (langs[0] if len(set(langs)) == 1 else None), np.stack(rows), lang_ids

    def pair_rows(self, d: _Data, split: str, a: str, b: str, rng: np.random.Generator, batch_size: int,
                  length_of: Callable[[np.ndarray], np.ndarray], length_batching: bool,
                  pairs: np.ndarray | None = None) -> np.ndarray:
        """Rows (B, 2) of pair indices (from `pairs`, default all of a-b); with length batching: 4x drawn, sorted by
        length, a window taken."""
        pairs = d.pairs(split, a, b) if pairs is None else pairs
        pool = 4 * batch_size if length_batching else batch_size
        rows = pairs[rng.choice(len(pairs), size=pool, replace=len(pairs) < pool)]
        if length_batching:
            rows = rows[np.argsort(length_of(rows), kind="stable")]
            start = int(rng.integers(0, pool - batch_size + 1))
            rows = rows[start:start + batch_size]
        return rows


    def translation_items(self, d: _Data, split: str, rng: np.random.Generator, batch_size: int,
                          pair: str | None) -> tuple[str, str, list[tuple[str, np.ndarray, str, np.ndarray]]]:
        """(a, b, [(x_lang, x, y_lang, y), ...]): a batch of one pair's translations, each direction half
        the time, length-batched when `self.length_batching` (TLM, MT)."""
        a, b = self.pick_pair(d, split, rng, pair)
        rows = self.pair_rows(d, split, a, b, rng, batch_size, lambda r: d.seg_lengths(split, a, r[:, 0])
                              + d.seg_lengths(split, b, r[:, 1]), self.length_batching)
        swap = rng.random(batch_size) < 0.5  # both directions
        items = []
        for (ia, ib), sw in zip(rows, swap, strict=True):
            (lx, ix), (ly, iy) = ((b, ib), (a, ia)) if sw else ((a, ia), (b, ib))
            items.append((lx, d.seg(split, lx, ix), ly, d.seg(split, ly, iy)))
        return a, b, items


def _pad_batch(seqs: list[np.ndarray], extras: dict[str, list[np.ndarray]], pad_id: int, multiple: int,
               cap: int) -> dict[str, torch.Tensor]:
    """Right-pad sequences (and per-token extras, padded with 0) to the longest, rounded up to `multiple`."""
    T = min(_round_up(max(len(s) for s in seqs), multiple), max(cap, max(len(s) for s in seqs)))
    B = len(seqs)
    idx = np.full((B, T), pad_id, dtype=np.int64)
    pad_mask = np.zeros((B, T), dtype=bool)
    out_extra = {k: np.zeros((B, T), dtype=np.int64) for k in extras}
    for i, s in enumerate(seqs):
        idx[i, :len(s)] = s
        pad_mask[i, :len(s)] = True
        for k, v in extras.items():
            out_extra[k][i, :len(s)] = v[i]
    out = {"idx": torch.from_numpy(idx), "pad_mask": torch.from_numpy(pad_mask)}
    out.update({k: torch.from_numpy(v) for k, v in out_extra.items()})
    return out


def target_span(targets: torch.Tensor, multiple: int = 8) -> dict[str, torch.Tensor]:
    """Each row's one contiguous run of targets, gathered to the left: {"target_pos", "target_ids"}, both (B, W).

    targets (B, T) is IGNORE outside one run per row (`y </s>` of a translation); W is the longest run rounded
    up to `multiple` (capped at T). Past its run a row's ids are IGNORE and its positions repeat the last one.
    The output layer then reads B x W hidden states instead of B x T, with shapes that still depend only on the
    batch (what a compiled graph needs): measured on the translation model (4 x 256, vocabulary 8,000, en<->fr
    batches of 32, bf16, compiled) 0.37 s a fine-tune step vs 0.44 s with the output layer at every position.
    """
    B, T = targets.shape
    real = targets != IGNORE  # (B, T)
    n = real.sum(1)  # (B,)
    start = real.long().argmax(1)  # (B,) first target position (0 for a row without targets)
    W = min(max(_round_up(int(n.max()), multiple), 1), T)
    offset = torch.arange(W)[None, :]  # (1, W)
    pos = (start[:, None] + offset).clamp(max=T - 1)  # (B, W)
    ids = targets.gather(1, pos).masked_fill(offset >= n[:, None], IGNORE)
    return {"target_pos": pos, "target_ids": ids}


def span_loss(lm_head: nn.Module, hidden: torch.Tensor, batch: dict, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of the output layer on the hidden states (B, T, D) at batch["target_pos"] (B, W)."""
    pos = batch["target_pos"]
    picked = hidden.gather(1, pos[..., None].expand(-1, -1, hidden.size(-1)))  # (B, W, D)
    logits = lm_head(picked).float()  # (B, W, V)
    return F.cross_entropy(logits.flatten(0, 1), batch["target_ids"].flatten(), ignore_index=IGNORE,
                           label_smoothing=label_smoothing)


# ---------------------------------------------------------------------------- monolingual streams

def pack_stream(tokens: np.ndarray, offsets: np.ndarray, start: int, length: int, tag: int,
                eos: int) -> np.ndarray:
    """`<tag> seg_start </s> seg_start+1 </s> ...` cut to `length` tokens (wrapping past the last segment)."""
    out = np.empty(length, dtype=np.int64)
    out[0] = tag
    n, i, N = 1, start, len(offsets) - 1
    while n < length:
        seg = tokens[offsets[i]:offsets[i + 1]]
        take = min(len(seg), length - n)
        out[n:n + take] = seg[:take]
        n += take
        if n < length:
            out[n] = eos
            n += 1
        i = (i + 1) % N
    return out


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
        per_token = F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten(), reduction="none")
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

    def mask(self, d: _Data, ids: np.ndarray, special: np.ndarray, rng: np.random.Generator):
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
        loss = F.cross_entropy(logits.float(), target)
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

    def make_batch(self, shards, split: str, rng: np.random.Generator, batch_size: int, seq_len: int,
                   *, pair: str | None = None) -> dict:
        d = self.data(shards)
        a, b, items = self.translation_items(d, split, rng, batch_size, pair)
        seqs, pos, lids = [], [], []
        for lx, x, ly, y in items:
            nx, ny = _fit_pair(len(x), len(y), seq_len - 4)
            e = [d.eos]
            seqs.append(np.concatenate([e, x[:nx], e, e, y[:ny], e]))
            pos.append(np.concatenate([np.arange(nx + 2), np.arange(ny + 2)]))
            lids.append(np.repeat([d.lang_index(lx), d.lang_index(ly)], [nx + 2, ny + 2]))
        out = _pad_batch(seqs, {"positions": pos, "lang_ids": lids}, d.pad, self.pad_multiple, seq_len)
        idx, targets = self.mask(d, out["idx"].numpy(), ~out["pad_mask"].numpy(), rng)
        out.update(idx=idx, targets=targets, pair=f"{a}-{b}", n_tokens=int(out["pad_mask"].sum()))
        return out


class MT(Objective):
    """Causal translation LM: `<x_lang> x </s> <y_lang> y </s>`, next-token loss on `y </s>` only.

    Exactly the prompt format of tasks/translate.py, over every language pair of the corpus (pairs drawn
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

    def make_batch(self, shards, split: str, rng: np.random.Generator, batch_size: int, seq_len: int,
                   *, pair: str | None = None) -> dict:
        d = self.data(shards)
        a, b, items = self.translation_items(d, split, rng, batch_size, pair)
        seqs, tgts, lids = [], [], []
        for lx, x, ly, y in items:
            nx, ny = _fit_pair(len(x), len(y), seq_len - 3)
            full = np.concatenate([[d.tag(lx)], x[:nx], [d.eos, d.tag(ly)], y[:ny], [d.eos]])
            target = full[1:].copy()  # position j predicts full[j + 1]; only y and the final </s> count
            target[:nx + 2] = IGNORE
            seqs.append(full[:-1])
            tgts.append(target)
            lids.append(np.repeat([d.lang_index(lx), d.lang_index(ly)], [nx + 2, ny + 1]))
        out = _pad_batch(seqs, {"targets": tgts, "lang_ids": lids}, d.pad, self.pad_multiple, seq_len)
        targets = out["targets"]
        targets[~out["pad_mask"]] = IGNORE
        del out["pad_mask"]  # right padding under a causal mask: no real position sees it (a faster kernel)
        out.update(target_span(targets), pair=f"{a}-{b}", n_tokens=int(sum(len(s) for s in seqs)))
        return out

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

    def build(self, d: _Data, items: list, labels: np.ndarray, seq_len: int, reset_positions: bool) -> dict:
        """items: (tokens a, lang a, tokens b, lang b) per example."""
        seqs, pos, lids = [], [], []
        for ta, la, tb, lb in items:
            na, nb = _fit_pair(len(ta), len(tb), seq_len - 3)
            seqs.append(np.concatenate([[d.bos], ta[:na], [d.eos], tb[:nb], [d.eos]]))
            n1, n2 = na + 2, nb + 1
            second = np.arange(n2) if reset_positions else n1 + np.arange(n2)
            pos.append(np.concatenate([np.arange(n1), second]))
            lids.append(np.repeat([d.lang_index(la), d.lang_index(lb)], [n1, n2]))
        out = _pad_batch(seqs, {"positions": pos, "lang_ids": lids}, d.pad, self.pad_multiple, seq_len)
        out.update(labels=torch.from_numpy(labels.astype(np.int64)), n_tokens=int(out["pad_mask"].sum()))
        return out

    def order(self, lengths: np.ndarray, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        """Which of the pool's examples form the batch (length window, or the first batch_size)."""
        if not self.length_batching:
            return np.arange(batch_size)
        start = int(rng.integers(0, len(lengths) - batch_size + 1))
        return np.argsort(lengths, kind="stable")[start:start + batch_size]

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
        n = d.lang_counts(split)[lang]
        pool = 4 * batch_size if self.length_batching else batch_size
        ia = rng.integers(0, n - 1, size=pool)  # a must have a next segment
        labels = (rng.random(pool) < 0.5).astype(np.int64)
        rand = rng.integers(0, n - 1, size=pool)
        rand = rand + (rand >= ia + 1)  # uniform over every segment except the true next one
        ib = np.where(labels == 1, ia + 1, rand)
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
        pairs = d.pairs(split, a, b)
        pool = 4 * batch_size if self.length_batching else batch_size
        rows = pairs[rng.choice(len(pairs), size=pool, replace=len(pairs) < pool)]  # (pool, 2)
        a_first = rng.random(pool) >= 0.5  # direction of each example: a then b, or b then a
        labels = (rng.random(pool) < 0.5).astype(np.int64)
        i1 = np.where(a_first, rows[:, 0], rows[:, 1])
        i2 = np.where(a_first, rows[:, 1], rows[:, 0])  # the translation of i1
        n2 = np.where(a_first, n_b, n_a)
        rand = rng.integers(0, n2 - 1)  # uniform over L2's segments except the translation
        i2 = np.where(labels == 1, i2, rand + (rand >= i2))
        l1 = [a if f else b for f in a_first]
        l2 = [b if f else a for f in a_first]
        lengths = (d.seg_lengths(split, a, np.where(a_first, i1, i2))  # indices into a's segments
                   + d.seg_lengths(split, b, np.where(a_first, i2, i1)))
        keep = self.order(lengths, rng, batch_size)
        built = [(d.seg(split, l1[k], i1[k]), l1[k], d.seg(split, l2[k], i2[k]), l2[k]) for k in keep]
        out = self.build(d, built, labels[keep], seq_len, reset_positions=True)
        out["pair"] = f"{a}-{b}"
        return out


def _longer_side(d: _Data, split: str, a: str, b: str) -> Callable[[np.ndarray], np.ndarray]:
    """Rows (n, 2) -> (n,) the longer side's length: what a batch of separately encoded sides pads to."""
    return lambda r: np.maximum(d.seg_lengths(split, a, r[:, 0]), d.seg_lengths(split, b, r[:, 1]))


def sides_batch(d: _Data, split: str, a: str, b: str, rows: np.ndarray, seq_len: int, pad_multiple: int) -> dict:
    """Both sides of B translation pairs (rows (B, 2): a's index, b's index) as one batch of 2B rows, each
    `<lang> x </s>` alone (rows 0..B-1 = side a, B..2B-1 = side b), for a bidirectional pass and `mean_pool`."""
    seqs, lids = [], []
    for col, lang in ((0, a), (1, b)):
        for i in rows[:, col]:
            s = d.seg(split, lang, i)[:seq_len - 2]
            seqs.append(np.concatenate([[d.tag(lang)], s, [d.eos]]))
            lids.append(np.full(len(s) + 2, d.lang_index(lang)))
    out = _pad_batch(seqs, {"lang_ids": lids}, d.pad, pad_multiple, seq_len)
    out.update(pair=f"{a}-{b}", n_tokens=int(out["pad_mask"].sum()))
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

    def make_batch(self, shards, split: str, rng: np.random.Generator, batch_size: int, seq_len: int,
                   *, pair: str | None = None) -> dict:
        d = self.data(shards)
        a, b = self.pick_pair(d, split, rng, pair)
        rows = self.pair_rows(d, split, a, b, rng, batch_size, _longer_side(d, split, a, b), self.length_batching)
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
        self._rows: dict = {}  # "data": the _Data they index, split -> {other language: (M, 2) rows}

    def pivot_rows(self, d: _Data, split: str) -> dict[str, np.ndarray]:
        """{x: (M, 2) rows (pivot segment, x segment)} of the pairs whose pivot side has a teacher vector."""
        if self._rows.get("data") is not d:  # another shards object: start over
            self._rows = {"data": d}
        if split not in self._rows:
            table, out = self.targets.get(split), {}
            for x in d.shards.langs:
                if x == self.pivot or table is None or (self.pairs is not None
                                                        and pair_name(d.shards.langs, self.pivot, x) not in self.pairs):
                    continue
                rows = np.asarray(d.pairs(split, self.pivot, x))  # (M, 2), column 0 the pivot's segment
                rows = rows[table.covers(rows[:, 0])]
                if len(rows):
                    out[x] = rows
            self._rows[split] = out
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
        if pair is None:
            x = _draw({k: len(v) for k, v in rows_by.items()}, self.alpha, rng,
                      f"{self.pivot} translation pairs with teacher vectors", split)
        else:
            a, b = split_pair(pair, d.shards.langs) or ("", "")
            x = b if a == self.pivot else a
            if self.pivot not in (a, b) or x not in rows_by:
                raise XlingError(f"objective distill: no {split} pairs of {pair} with teacher vectors")
        rows = self.pair_rows(d, split, self.pivot, x, rng, batch_size, _longer_side(d, split, self.pivot, x),
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


# ---------------------------------------------------------------------------- evaluation

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
    d = _Data(shards)
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
            T = min(_round_up(max(len(w) for w in ws) - 1, pad_multiple), seq_len)
            x = torch.full((len(ws), T), d.pad, dtype=torch.long)
            y = torch.full((len(ws), T), IGNORE, dtype=torch.long)
            for r, w in enumerate(ws):
                x[r, :len(w) - 1] = torch.from_numpy(w[:-1])
                y[r, :len(w) - 1] = torch.from_numpy(w[1:])
            batch = {"idx": x.to(dev), "lang_ids": torch.full_like(x, d.lang_index(lang)).to(dev)}
            hidden = _run(model, batch, causal=True)  # right padding: causal rows never see it
            logits = unwrap(model).lm_head(hidden).float()  # (b, T, V)
            total += F.cross_entropy(logits.flatten(0, 1), y.to(dev).flatten(), reduction="sum").item()
    finally:
        model.train(was_training)
    return total, chars


def bits_per_char(nats: float, chars: int) -> float:
    return nats / math.log(2) / max(chars, 1)


# ---------------------------------------------------------------------------- building

OBJECTIVES: dict[str, type[Objective]] = {"clm": CLM, "mlm": MLM, "tlm": TLM, "mt": MT, "nsp": NSP,
                                          "xnsp": XNSP, "contrastive": Contrastive, "distill": Distill}


def build_objectives(weights: dict[str, float], shards, *, alpha: float = 0.3, pair_alpha: float = 0.3,
                     mlm_prob: float = 0.15, mlm_smoothing: float = 0.0, tau: float = 0.05,
                     margin: float = 0.0, d_model: int | None = None, length_batching: bool = True,
                     pad_multiple: int = 16, pairs: list[str] | None = None,
                     mixed_langs: bool = True, teacher: dict | None = None) -> dict[str, Objective]:
    """Objectives with a positive weight, by name (weight 0 switches one off). Checks the shards fit them.
    pairs: the language pairs the pair objectives draw from (`resolve_pairs`); None or [] = every pair.
    mixed_langs: monolingual batches (clm, mlm) draw each row's language on its own (`Objective.stream`).
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
    needs_pairs = any(OBJECTIVES[k].uses_pairs for k in active)
    n_pairs = sum(_Data(shards).pair_counts("train").values()) if needs_pairs else 0
    counts = token_counts(shards, "train") if mlm_smoothing > 0 and {"mlm", "tlm"} & set(active) else None
    out: dict[str, Objective] = {}
    for name in active:
        if OBJECTIVES[name].uses_pairs and n_pairs == 0:
            raise XlingError(f"objective {name} needs translation pairs but the corpus has none; use an "
                             f"aligned source (bible, tsv, or segments sharing keys across languages) or "
                             f"drop {name} from train.objectives")
        if name == "clm":
            out[name] = CLM(alpha)
        elif name == "mlm":
            out[name] = MLM(alpha, mlm_prob, mlm_smoothing, counts)
        elif name == "tlm":
            out[name] = TLM(pair_alpha, mlm_prob, mlm_smoothing, counts, length_batching, pad_multiple)
        elif name == "mt":
            out[name] = MT(pair_alpha, length_batching, pad_multiple)
        elif name in ("nsp", "xnsp", "distill") and not d_model:
            raise ValueError(f"build_objectives: objective {name} needs d_model for its head")
        elif name == "distill":
            if teacher is None:
                raise ValueError("build_objectives: objective distill needs its teacher vectors (teacher=)")
            out[name] = Distill(d_model, teacher, pair_alpha, length_batching, pad_multiple)
        elif name in ("nsp", "xnsp"):
            cls = NSP if name == "nsp" else XNSP
            out[name] = cls(d_model, alpha if name == "nsp" else pair_alpha, length_batching, pad_multiple)
        else:
            out[name] = Contrastive(pair_alpha, tau, margin, length_batching, pad_multiple)
    for obj in out.values():
        obj.mixed_langs = mixed_langs
    if pairs and needs_pairs:
        chosen = resolve_pairs(pairs, shards)
        for obj in out.values():
            if obj.uses_pairs:
                obj.pairs = chosen
    return out
