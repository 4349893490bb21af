"""Batches from the shards: what every pretraining objective builds its inputs from (no losses here).

    d = ShardView(shards)                                   # cached token arrays, offsets and pair indices
    lang = draw(d.lang_counts("train"), 0.3, rng, "segments", "train")     # q ∝ p^alpha
    lang = draw(counts, 0.3, rng, "segments", "train", shares={"it": 0.5}, langs=d.shards.langs)  # half it
    row = pack_stream(*d.arrays("train", lang), start, 129, d.tag(lang), d.eos)  # `<lang> s1 </s> s2 </s> ...`
    ids, mask = pad_right(seqs, d.pad, multiple=16, cap=128)  # (B, T) long, (B, T) bool
    inputs, targets = mask_tokens(ids, special, rng, mask_id=d.mask, real_ids=d.real_ids)  # 80/10/10

Holds the shard view (`ShardView`), language and pair sampling (`draw`, `with_shares`, `check_shares`,
`split_pair`, `pair_name`, `resolve_pairs`), packing (`pack_stream`), fitting two segments into one row
(`fit_pair`), the one right-padding rule (`pad_right`, used by the objectives, held-out scoring, sentence encoding
and the tasks), BERT/XLM masking (`mask_tokens`, `token_counts`, `smoothing_weights`), target spans (`target_span`)
and the two-sided batch of separately encoded translation pairs (`sides_batch`). Randomness comes only from the
numpy Generator passed in, so a saved rng state reproduces the data order. `xling.objectives` builds on this module.

Sampling: a name (a language, or a pair "a-b") is drawn with q ∝ p^alpha over counts (`xling.corpus.sampling_probs`).
Fixed language shares (train.lang_shares, e.g. {it = 0.5} for continued pretraining of a new language with replay
of the old ones) then set how much of that mass the names involving a language get together (`with_shares`): the
names involving it split 50% in proportion to q, every other name splits the remaining 50% the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import combinations

import numpy as np
import torch

from xling.corpus import sampling_probs
from xling.errors import XlingError

IGNORE = -100  # target of a position without loss (torch cross_entropy's ignore_index)


# ---------------------------------------------------------------------------- the shard view and sampling

class ShardView:
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
    langs, counts = shards.langs, ShardView(shards).pair_counts("train")
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


def check_shares(shares: dict[str, float], langs: Sequence[str] | None = None) -> None:
    """One XlingError unless every share of train.lang_shares is a number in [0, 1], they sum to at most 1 and (with
    `langs`, the run's languages) every key is one of `langs`."""
    for k, v in shares.items():  # not (0 <= v <= 1): also nan
        if not (isinstance(v, int | float) and 0 <= v <= 1):
            raise XlingError(f"train.lang_shares: {k} = {v!r} is not a share in [0, 1]; e.g. {{it = 0.5}}")
    if math.fsum(shares.values()) > 1 + 1e-9:  # 1e-9: decimal shares such as 0.1 + 0.2 + 0.7 sum to 1 up to rounding
        raise XlingError(f"train.lang_shares sum to {math.fsum(shares.values()):g}, more than 1; lower them")
    unknown = [k for k in shares if k not in langs] if langs is not None else []
    if unknown:
        raise XlingError(f"train.lang_shares: {unknown[0]!r} is not a language of this run ({', '.join(langs)}); "
                         f"give shares only to those")


def with_shares(probs: dict[str, float], shares: dict[str, float], langs: Sequence[str]) -> dict[str, float]:
    """probs (name -> q, summing to 1; a name is a language or a pair "a-b" of `langs`) with fixed language shares.

    The names with q > 0 that involve key k (k itself, or a pair with k on one side) form k's group, which gets
    shares[k] of the mass in total, split in proportion to q; a pair of two keys belongs to the first of them in
    `shares` order. The other names get the rest, 1 - sum(shares), split the same way. A group without names (a
    language without pairs, or outside this draw) gives its mass back: the groups' masses are renormalised. No
    shares: probs unchanged. Shares summing to 1 leave the names outside every group nothing (no replay); shares
    that leave every name nothing are an XlingError.
    """
    if not shares or not any(probs.values()):  # nothing to draw: `draw` says so
        return probs
    group = {}  # name -> its key, or None (the rest)
    for name in probs:
        involved = (name,) if name in langs else split_pair(name, langs) or ()
        group[name] = next((k for k in shares if k in involved), None)
    rest = 1 - math.fsum(shares.values())
    mass = {**shares, None: rest if rest > 1e-9 else 0.0}  # a sum of 1 up to decimal rounding leaves nothing
    total = {g: math.fsum(q for n, q in probs.items() if group[n] == g) for g in mass}  # q of each group
    live = {g: m for g, m in mass.items() if total[g] > 0}  # groups with names: their masses, renormalised below
    norm = math.fsum(live.values())
    if norm == 0:  # every group with names has share 0
        names = [n for n, q in probs.items() if q > 0]
        raise XlingError(f"train.lang_shares {shares} leave no sampling mass for {', '.join(names)}; give them "
                         f"a share, or lower the shares to sum below 1")
    return {n: live[group[n]] * q / total[group[n]] / norm if q > 0 else 0.0 for n, q in probs.items()}


def draw(counts: dict[str, int], alpha: float, rng: np.random.Generator, what: str, split: str,
         n: int | None = None, *, shares: dict[str, float] | None = None,
         langs: Sequence[str] = ()) -> str | list[str]:
    """One name (or a list of n, drawn independently) with probability q ∝ p^alpha (p ∝ counts), from the caller's
    rng; with `shares` (train.lang_shares) q is reweighted by `with_shares` (names are languages or pairs of
    `langs`). No shares: exactly the draws of q."""
    probs = with_shares(sampling_probs(counts, alpha), shares or {}, langs)
    names = [k for k, q in probs.items() if q > 0]
    if not names:
        raise XlingError(f"the {split} split has no {what} to sample from; rebuild the shards with more data")
    q = np.array([probs[k] for k in names])
    if n is None:
        return names[rng.choice(len(names), p=q)]
    return [names[i] for i in rng.choice(len(names), size=n, p=q)]


def pair_rows(d: ShardView, split: str, a: str, b: str, rng: np.random.Generator, batch_size: int,
          length_of: Callable[[np.ndarray], np.ndarray], length_batching: bool,
          pairs: np.ndarray | None = None) -> np.ndarray:
    """Rows (B, 2) of pair indices (from `pairs`, default all of a-b); with length batching: 4x drawn, sorted by
    length, a window taken."""
    pairs = d.pairs(split, a, b) if pairs is None else pairs
    pool = 4 * batch_size if length_batching else batch_size
    rows = pairs[rng.choice(len(pairs), size=pool, replace=len(pairs) < pool)]
    return rows[length_window(length_of(rows), rng, batch_size)] if length_batching else rows


def pivot_pair_rows(d: ShardView, split: str, pivot: str, covers: Callable[[np.ndarray], np.ndarray],
                    pairs: list[str] | None = None) -> dict[str, np.ndarray]:
    """{x: (M, 2) rows (pivot segment, x segment)} of the pivot's translation pairs whose pivot segment passes
    `covers` ((M,) segment indices -> (M,) bool, e.g. has a teacher vector), for every x (only `pairs` if given)."""
    out = {}
    for x in d.shards.langs:
        if x == pivot or (pairs is not None and pair_name(d.shards.langs, pivot, x) not in pairs):
            continue
        rows = np.asarray(d.pairs(split, pivot, x))  # (M, 2), column 0 the pivot's segment
        rows = rows[covers(rows[:, 0])]
        if len(rows):
            out[x] = rows
    return out


def length_window(lengths: np.ndarray, rng: np.random.Generator, batch_size: int) -> np.ndarray:
    """Indices of batch_size examples of similar length: the pool sorted by length, a random window of it."""
    start = int(rng.integers(0, len(lengths) - batch_size + 1))
    return np.argsort(lengths, kind="stable")[start:start + batch_size]


def next_segment_examples(d: ShardView, split: str, lang: str, rng: np.random.Generator,
                          pool: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NSP's candidates (ia, ib, labels), each (pool,): label 1 (half the time) = ib is the segment after ia in the
    shard, else ib is uniform over the language's other segments."""
    n = d.lang_counts(split)[lang]
    ia = rng.integers(0, n - 1, size=pool)  # a must have a next segment
    labels = (rng.random(pool) < 0.5).astype(np.int64)
    rand = rng.integers(0, n - 1, size=pool)
    rand = rand + (rand >= ia + 1)  # uniform over every segment except the true next one
    return ia, np.where(labels == 1, ia + 1, rand), labels


def translation_examples(d: ShardView, split: str, a: str, b: str, rng: np.random.Generator,
                         pool: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """XNSP's candidates (a_first, i1, i2, labels), each (pool,): a_first = the example reads a's segment i1 then
    b's segment i2 (else b's i1 then a's i2); label 1 (half the time) = i2 is the translation of i1, else i2 is
    uniform over that language's other segments."""
    n_a, n_b = d.lang_counts(split)[a], d.lang_counts(split)[b]
    pairs = d.pairs(split, a, b)
    rows = pairs[rng.choice(len(pairs), size=pool, replace=len(pairs) < pool)]  # (pool, 2)
    a_first = rng.random(pool) >= 0.5  # direction of each example: a then b, or b then a
    labels = (rng.random(pool) < 0.5).astype(np.int64)
    i1 = np.where(a_first, rows[:, 0], rows[:, 1])
    i2 = np.where(a_first, rows[:, 1], rows[:, 0])  # the translation of i1
    n2 = np.where(a_first, n_b, n_a)
    rand = rng.integers(0, n2 - 1)  # uniform over L2's segments except the translation
    return a_first, i1, np.where(labels == 1, i2, rand + (rand >= i2)), labels


def translation_items(d: ShardView, split: str, a: str, b: str, rows: np.ndarray,
                      rng: np.random.Generator) -> list[tuple[str, np.ndarray, str, np.ndarray]]:
    """[(x_lang, x, y_lang, y), ...]: the translations of pair rows (B, 2) (a's index, b's index), each direction
    half the time."""
    swap = rng.random(len(rows)) < 0.5  # both directions
    items = []
    for (ia, ib), sw in zip(rows, swap, strict=True):
        (lx, ix), (ly, iy) = ((b, ib), (a, ia)) if sw else ((a, ia), (b, ib))
        items.append((lx, d.seg(split, lx, ix), ly, d.seg(split, ly, iy)))
    return items


# ---------------------------------------------------------------------------- packing and padding

def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple if multiple > 1 else n


def fit_pair(la: int, lb: int, budget: int) -> tuple[int, int]:
    """Lengths of two segments cut to fit `budget` tokens together, trimming the longer one first."""
    if la + lb <= budget:
        return la, lb
    half = budget // 2
    if la <= half:
        return la, budget - la
    if lb <= half:
        return budget - lb, lb
    return half, budget - half


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


def packed_rows(d: ShardView, split: str, langs: list[str], rng: np.random.Generator,
                length: int) -> tuple[np.ndarray, torch.Tensor]:
    """(rows (B, length), lang_ids (B, length)): row r the packed stream of langs[r] from a random start segment."""
    rows, ids = [], []
    for lg in langs:
        tok, off = d.arrays(split, lg)
        start = int(rng.integers(0, len(off) - 1))  # a random start segment per row
        rows.append(pack_stream(tok, off, start, length, d.tag(lg), d.eos))
        ids.append(d.lang_index(lg))
    lang_ids = torch.tensor(ids, dtype=torch.long)[:, None].expand(len(langs), length).contiguous()
    return np.stack(rows), lang_ids


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int, *, multiple: int = 1, cap: int | None = None,
              width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad sequences of ids into (ids (B, T) long, pad_id past each row's end; mask (B, T) bool, True = real).

    T is `width` when given (e.g. to pad a batch's per-token language ids or targets to its ids' width), else the
    longest sequence rounded up to `multiple` (few distinct shapes for a compiled model), but not past `cap` unless a
    sequence is longer itself; at least 1. Each row keeps its tokens at 0..len-1, so under a causal mask no real
    position sees the padding.
    """
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)  # (B,)
    if width is None:
        longest = int(lengths.max(initial=0))
        width = round_up(longest, multiple)
        if cap is not None:
            width = min(width, max(cap, longest))
        width = max(width, 1)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    for r, s in enumerate(seqs):
        ids[r, :len(s)] = s
    mask = np.arange(width)[None, :] < lengths[:, None]  # (B, T)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def pad_batch(seqs: Sequence[np.ndarray], pad_id: int, multiple: int, cap: int,
              **extras: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
    """{"idx", "pad_mask"} (B, T) from `pad_right`, plus each per-token extra (positions, language ids: one array
    per sequence, of its length) padded with 0 to the same T."""
    idx, mask = pad_right(seqs, pad_id, multiple=multiple, cap=cap)
    return {"idx": idx, "pad_mask": mask, **{k: pad_right(v, 0, width=idx.shape[1])[0] for k, v in extras.items()}}


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
    W = min(max(round_up(int(n.max()), multiple), 1), T)
    offset = torch.arange(W)[None, :]  # (1, W)
    pos = (start[:, None] + offset).clamp(max=T - 1)  # (B, W)
    ids = targets.gather(1, pos).masked_fill(offset >= n[:, None], IGNORE)
    return {"target_pos": pos, "target_ids": ids}


# ---------------------------------------------------------------------------- the objectives' row layouts

def tlm_batch(d: ShardView, items: list, seq_len: int, pad_multiple: int) -> dict[str, torch.Tensor]:
    """TLM's rows before masking: `</s> x </s> </s> y </s>` per item (x_lang, x, y_lang, y), the two cut to fit
    seq_len (`fit_pair`), positions restarting at 0 on y (XLM). {"idx", "pad_mask", "positions", "lang_ids"} (B, T)."""
    seqs, pos, lids = [], [], []
    for lx, x, ly, y in items:
        nx, ny = fit_pair(len(x), len(y), seq_len - 4)
        e = [d.eos]
        seqs.append(np.concatenate([e, x[:nx], e, e, y[:ny], e]))
        pos.append(np.concatenate([np.arange(nx + 2), np.arange(ny + 2)]))
        lids.append(np.repeat([d.lang_index(lx), d.lang_index(ly)], [nx + 2, ny + 2]))
    return pad_batch(seqs, d.pad, pad_multiple, seq_len, positions=pos, lang_ids=lids)


def mt_batch(d: ShardView, items: list, seq_len: int, pad_multiple: int) -> dict:
    """MT's rows: `<x_lang> x </s> <y_lang> y </s>` per item (x_lang, x, y_lang, y), causal inputs whose targets
    are `y </s>` only. {"idx", "targets", "lang_ids"} (B, T), the target span (`target_span`) and n_tokens; no
    pad_mask: right padding under a causal mask, no real position sees it (a faster kernel)."""
    seqs, tgts, lids = [], [], []
    for lx, x, ly, y in items:
        nx, ny = fit_pair(len(x), len(y), seq_len - 3)
        full = np.concatenate([[d.tag(lx)], x[:nx], [d.eos, d.tag(ly)], y[:ny], [d.eos]])
        target = full[1:].copy()  # position j predicts full[j + 1]; only y and the final </s> count
        target[:nx + 2] = IGNORE
        seqs.append(full[:-1])
        tgts.append(target)
        lids.append(np.repeat([d.lang_index(lx), d.lang_index(ly)], [nx + 2, ny + 1]))
    idx, _ = pad_right(seqs, d.pad, multiple=pad_multiple, cap=seq_len)  # (B, T)
    T = idx.shape[1]
    targets = pad_right(tgts, IGNORE, width=T)[0]
    return {"idx": idx, "targets": targets, "lang_ids": pad_right(lids, 0, width=T)[0], **target_span(targets),
            "n_tokens": int(sum(len(s) for s in seqs))}


def segment_pair_batch(d: ShardView, items: list, seq_len: int, pad_multiple: int,
                       reset_positions: bool) -> dict[str, torch.Tensor]:
    """NSP's rows: `<s> a </s> b </s>` per item (tokens a, lang a, tokens b, lang b), the two cut to fit seq_len;
    positions restart at 0 on b when `reset_positions` (XNSP, as TLM). {"idx", "pad_mask", "positions",
    "lang_ids"} (B, T)."""
    seqs, pos, lids = [], [], []
    for ta, la, tb, lb in items:
        na, nb = fit_pair(len(ta), len(tb), seq_len - 3)
        seqs.append(np.concatenate([[d.bos], ta[:na], [d.eos], tb[:nb], [d.eos]]))
        n1, n2 = na + 2, nb + 1
        second = np.arange(n2) if reset_positions else n1 + np.arange(n2)
        pos.append(np.concatenate([np.arange(n1), second]))
        lids.append(np.repeat([d.lang_index(la), d.lang_index(lb)], [n1, n2]))
    return pad_batch(seqs, d.pad, pad_multiple, seq_len, positions=pos, lang_ids=lids)


def longer_side(d: ShardView, split: str, a: str, b: str) -> Callable[[np.ndarray], np.ndarray]:
    """Rows (n, 2) -> (n,) the longer side's length: what a batch of separately encoded sides pads to."""
    return lambda r: np.maximum(d.seg_lengths(split, a, r[:, 0]), d.seg_lengths(split, b, r[:, 1]))


def sides_batch(d: ShardView, split: str, a: str, b: str, rows: np.ndarray, seq_len: int, pad_multiple: int) -> dict:
    """Both sides of B translation pairs (rows (B, 2): a's index, b's index) as one batch of 2B rows, each
    `<lang> x </s>` alone (rows 0..B-1 = side a, B..2B-1 = side b), for a bidirectional pass and `mean_pool`."""
    seqs, lids = [], []
    for col, lang in ((0, a), (1, b)):
        for i in rows[:, col]:
            s = d.seg(split, lang, i)[:seq_len - 2]
            seqs.append(np.concatenate([[d.tag(lang)], s, [d.eos]]))
            lids.append(np.full(len(s) + 2, d.lang_index(lang)))
    out = pad_batch(seqs, d.pad, pad_multiple, seq_len, lang_ids=lids)
    out.update(pair=f"{a}-{b}", n_tokens=int(out["pad_mask"].sum()))
    return out


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
