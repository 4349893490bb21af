"""Count-based language models over token ids: the baselines printed beside every bits-per-character number.

    uni = fit_unigram(shards, "fr")                        # add-1/2 unigram over the whole vocabulary
    kn = fit_kneser_ney(shards, "fr")                      # interpolated modified Kneser-Ney, 5-grams
    nats, chars = kn.eval_nll(shards, "test", "fr", max_tokens=20_000)   # the text `clm_eval` scores
    baseline_bpc(shards, "test", "fr", max_tokens=20_000)  # {"unigram": 3.1, "ngram": 2.2}

`xling evaluate --run RUN --only bpc` puts both beside the model's number for every language. Each model belongs
to one language and is trained on that language's train split of the shards: the same tokenizer and the
same text the Transformer learned from. Text is seen exactly as the model is scored, each segment as
`<lang> segment </s>`: the tag is context only (never predicted) and `</s>` is predicted. Evaluation scores
the segments `shards.scored_prefix` picks, the rule `heldout.clm_eval` follows too, so the three numbers
of a language share their text and their character count.

Unigram, with V the full vocabulary size and N the predicted tokens of the train split (tokens + `</s>`):

    P(w) = (c(w) + 1/2) / (N + V/2)

Interpolated modified Kneser-Ney (Chen & Goodman, "An empirical study of smoothing techniques for language
modeling", 1998), order n. For order k with context h (the k-1 tokens before w, h' = h without its first):

    P_k(w | h) = max(c_k(hw) - D_k(c_k(hw)), 0) / S_k(h)  +  gamma_k(h) P_{k-1}(w | h')      if S_k(h) > 0
               = P_{k-1}(w | h')                                                             otherwise
    S_k(h) = sum_w c_k(hw)        gamma_k(h) = (D_k1 N1(h.) + D_k2 N2(h.) + D_k3+ N3+(h.)) / S_k(h)
    P_0(w) = 1 / V                (so every token of the vocabulary has a probability above 0)

c_n is the raw count at the highest order; below it c_k(hw) = N1+(. h w), the number of distinct tokens seen
just before hw (the continuation count: a lower order is only consulted for what the higher one missed, so
it should say how many contexts a word completes, not how often it occurs). N_i(h.) is the number of words
with c_k(hw) = i. The discounts of each order come from its count-of-counts n_i (k-grams with count i):

    Y = n1 / (n1 + 2 n2)    D1 = 1 - 2Y n2/n1    D2 = 2 - 3Y n3/n2    D3+ = 3 - 4Y n4/n3

An estimate outside (0, i] (undefined on tiny corpora) falls back to 0.5, 1.0, 1.5 (KenLM's fallback).
Modified rather than plain KN (one D = n1/(n1 + 2 n2) per order): Chen & Goodman found it better across orders
and training sizes, it is what KenLM and SRILM's `-kndiscount` build, and the three discounts cost nothing more
than one (the same count-of-counts), so the baseline is the strong standard one. On the demo run (order 5,
valid split) the two are close: 1.615 vs 1.616 bits per character averaged over 8 languages.
Every distribution sums to 1 because sum_w D(c(hw)) over the seen words is exactly gamma_k(h) S_k(h).

The start of a segment: the context before the tag is the tag again, so `<lang> <lang> <lang> w` is an
ordinary 4-gram with raw counts (the role `<s>` plays in ARPA models); the model's first prediction sees
only `<lang>` too.

Counting is numpy only: the stream of all segments (each `<lang>`*(n-1) segment `</s>`) gets, per order k,
an id for the k-gram ending at every position: id_k[p] = rank of (id_{k-1}[p-1] * V + token[p]) among the
distinct such keys (np.unique). Keys stay below (#distinct (k-1)-grams) * V < 2^63 at any order, so no
hashing and no collision; lookups at evaluation are np.searchsorted over the sorted keys of each order.
Both baselines for the 8 languages of the demo run (~1.1M train tokens each, order 5, 20,000 test tokens):
5.5 s of CPU (10 s wall on a shared 2-core machine), ~250 MB peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from xling.errors import XlingError
from xling.shards import scored_prefix

# Chosen on the valid split of the 8-language Bible demo run (vocab 8000, ~1.1M train tokens per language): mean
# bits per character over the languages, order 3 -> 1.694, 4 -> 1.630, 5 -> 1.615 (6 -> 1.612, 8 -> 1.612: the
# gain has stopped; every language improves from 4 to 5), `bench/ngram_orders.py`.
DEFAULT_ORDER = 5
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # D1, D2, D3+ where count-of-counts give no usable estimate (KenLM's)
_CHUNK = 1 << 20  # windows scored at a time: (chunk, order) int64 keeps memory bounded on any split


def _stream(tokens: np.ndarray, offsets: np.ndarray, tag: int, eos: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """All segments as one int64 stream `<lang>`*pad segment `</s>` each, and each position's index inside
    its own padded segment (positions >= pad are the predicted ones). offsets: (N+1,), may start above 0."""
    offsets = np.asarray(offsets, dtype=np.int64)
    lens = np.diff(offsets)  # (N,)
    seg_len = lens + pad + 1
    starts = np.concatenate([[0], np.cumsum(seg_len)[:-1]])  # (N,) where each padded segment begins
    stream = np.full(int(seg_len.sum()), tag, dtype=np.int64)
    seg_of_token = np.repeat(np.arange(len(lens)), lens)
    # token j (counted from offsets[0]) of segment i moves right by i*(pad+1) (earlier pads and </s>) plus its pad
    stream[np.arange(len(seg_of_token)) + seg_of_token * (pad + 1) + pad] = tokens[offsets[0]:offsets[-1]]
    stream[starts + seg_len - 1] = eos
    pos = np.arange(len(stream)) - np.repeat(starts, seg_len)
    return stream, pos


def modified_kn_discounts(counts: np.ndarray) -> np.ndarray:
    """[0, D1, D2, D3+] of one order from the counts of its k-grams (Chen & Goodman's estimates; see above)."""
    n = np.bincount(np.asarray(counts, dtype=np.int64), minlength=5)[:5].astype(np.float64)  # n[i]: count == i
    out = np.zeros(4)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = n[1] / (n[1] + 2 * n[2])
        for i in (1, 2, 3):
            d = i - (i + 1) * y * n[i + 1] / n[i]
            out[i] = d if 0 < d <= i else FALLBACK_DISCOUNTS[i - 1]  # nan (n_i = 0) fails the test too
    return out


def _lookup(keys: np.ndarray, prefix_ids: np.ndarray, tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """Ids (row in the sorted `keys`) of the k-grams (prefix (k-1)-gram id, token); -1 where never seen."""
    if len(keys) == 0:
        return np.full(len(tokens), -1, dtype=np.int64)
    query = prefix_ids * vocab_size + tokens
    at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where((prefix_ids >= 0) & (keys[at] == query), at, -1)


@dataclass
class _TokenModel:
    """What both baselines share: one language's tag and `</s>`, and scoring whole segments."""

    vocab_size: int
    tag: int
    eos: int
    order: int = field(init=False, default=1)

    def prob(self, windows: np.ndarray) -> np.ndarray:
        """(m, order) int64 windows, context then the predicted token -> (m,) float64 probabilities."""
        raise NotImplementedError

    def nll(self, tokens: np.ndarray, offsets: np.ndarray) -> float:
        """Sum of -ln P over every prediction of the segments tokens[offsets[i]:offsets[i+1]] (each segment
        and its `</s>`; the tag is context), in nats."""
        pad = self.order - 1
        stream, pos = _stream(tokens, offsets, self.tag, self.eos, pad)
        windows = sliding_window_view(stream, self.order)  # (L - pad, order); row r ends at position r + pad
        rows = np.flatnonzero(pos >= pad) - pad  # the windows whose last token is predicted
        return float(sum(-np.log(self.prob(windows[rows[s:s + _CHUNK]])).sum() for s in range(0, len(rows), _CHUNK)))

    def eval_nll(self, shards, split: str, lang: str, max_tokens: int) -> tuple[float, int]:
        """(nats, characters) over the same segments `heldout.clm_eval` scores with these arguments."""
        if lang not in shards.langs or int(shards.lang_token_ids[lang]) != self.tag:
            raise XlingError(f"this model was trained for the language with tag id {self.tag}, not {lang!r}")
        n, chars = scored_prefix(shards, split, lang, max_tokens)
        offsets = np.asarray(shards.offsets(split, lang), dtype=np.int64)[:n + 1]
        return self.nll(shards.tokens(split, lang), offsets), chars

    def _window(self, context, token: int | np.ndarray) -> np.ndarray:
        ctx = [self.tag] * (self.order - 1) + [int(t) for t in context]
        ctx = ctx[len(ctx) - (self.order - 1):]
        token = np.atleast_1d(np.asarray(token, dtype=np.int64))
        return np.column_stack([np.tile(np.asarray(ctx, np.int64), (len(token), 1)), token])

    def logprob(self, context, token: int) -> float:
        """ln P(token | `<lang>` context): context = the segment's tokens so far (without the tag)."""
        return float(np.log(self.prob(self._window(context, token))[0]))

    def distribution(self, context) -> np.ndarray:
        """(V,) P(w | `<lang>` context) for every token w of the vocabulary."""
        return self.prob(self._window(context, np.arange(self.vocab_size)))


@dataclass
class Unigram(_TokenModel):
    """P(w) = (c(w) + 1/2) / (N + V/2) over the whole vocabulary; counts of predicted tokens (segments + `</s>`)."""

    counts: np.ndarray = field(default=None, repr=False)  # (V,) int64

    @classmethod
    def fit(cls, tokens: np.ndarray, offsets: np.ndarray, *, vocab_size: int, tag: int, eos: int) -> Unigram:
        offsets = np.asarray(offsets, dtype=np.int64)
        counts = np.bincount(np.asarray(tokens[offsets[0]:offsets[-1]], np.int64), minlength=vocab_size)
        counts[eos] += len(offsets) - 1  # one `</s>` per segment
        return cls(vocab_size, tag, eos, counts=counts)

    def prob(self, windows: np.ndarray) -> np.ndarray:
        return (self.counts[windows[:, -1]] + 0.5) / (self.counts.sum() + 0.5 * self.vocab_size)


@dataclass
class KneserNey(_TokenModel):
    """Interpolated modified Kneser-Ney of one order (see the module docstring for the formulas).

    Per order k = 1..n (index k of each list; index 0 unused): keys[k] the sorted int64 keys of the distinct
    k-grams (prefix (k-1)-gram id * V + last token; the id of a k-gram is its row; for k = 1 the id is the
    token), counts[k] their counts (raw at n, continuation below), discounts[k] = [0, D1, D2, D3+], and per
    context id ((k-1)-gram; the one empty context at k = 1) total[k] = S_k(h) and gamma[k] = gamma_k(h).
    """

    order: int = 2  # (redefined: set by the constructor here, fixed at 1 for the unigram)
    keys: list = field(default_factory=list, repr=False)
    counts: list = field(default_factory=list, repr=False)
    discounts: list = field(default_factory=list)
    total: list = field(default_factory=list, repr=False)
    gamma: list = field(default_factory=list, repr=False)

    @classmethod
    def fit(cls, tokens: np.ndarray, offsets: np.ndarray, *, order: int, vocab_size: int, tag: int, eos: int,
            discounts: list | None = None) -> KneserNey:
        """Count and estimate from the segments tokens[offsets[i]:offsets[i+1]]. discounts: optional fixed
        (D1, D2, D3+) per order 1..n instead of the count-of-counts estimates."""
        if order < 2:
            raise XlingError(f"a Kneser-Ney model needs order >= 2, not {order}; the unigram baseline is `Unigram`")
        if discounts is not None and len(discounts) != order:
            raise XlingError(f"discounts need one (D1, D2, D3+) per order 1..{order}, got {len(discounts)}")
        V, n = vocab_size, order
        stream, pos = _stream(tokens, offsets, tag, eos, n - 1)
        target = np.flatnonzero(pos >= n - 1)  # the positions whose token is predicted
        ids: list = [None, stream]  # ids[k][p]: id of the k-gram ending at position p (-1: crosses a segment start)
        keys: list = [None, None]
        last = [None, None]  # last[k][i]: one position where k-gram i ends
        for k in range(2, n + 1):
            at = np.flatnonzero(pos >= k - 1)  # positions that end a k-gram inside their segment
            uniq, first, inv = np.unique(ids[k - 1][at - 1] * V + stream[at], return_index=True, return_inverse=True)
            ids.append(np.full(len(stream), -1, dtype=np.int64))
            ids[k][at] = inv
            keys.append(uniq)
            last.append(at[first])
        size = [1, V] + [len(k) for k in keys[2:]]  # distinct k-grams per order (size[0]: the empty context)

        counts: list = [None] * (n + 1)
        counts[n] = np.bincount(ids[n][target], minlength=size[n])  # raw counts at the highest order
        for k in range(n - 1, 0, -1):  # continuation counts: distinct predicted (k+1)-grams ending in each k-gram
            predicted = np.bincount(ids[k + 1][target], minlength=size[k + 1]) > 0
            suffix = ids[k][last[k + 1]]  # the k-gram that ends where each (k+1)-gram ends
            counts[k] = np.bincount(suffix[predicted], minlength=size[k])

        disc, total, gamma = [None], [None], [None]
        for k in range(1, n + 1):
            c = counts[k]
            prefix = keys[k] // V if k >= 2 else np.zeros(V, dtype=np.int64)  # context id of each k-gram
            d = modified_kn_discounts(c) if discounts is None else np.array([0.0, *discounts[k - 1]], np.float64)
            s = np.bincount(prefix, weights=c, minlength=size[k - 1])  # S_k(h)
            removed = np.bincount(prefix, weights=d[np.minimum(c, 3)], minlength=size[k - 1])  # sum_w D(c(hw))
            disc.append(d)
            total.append(s)
            gamma.append(np.divide(removed, s, out=np.zeros_like(s), where=s > 0))
        return cls(V, tag, eos, order=n, keys=keys, counts=counts, discounts=disc, total=total, gamma=gamma)

    def prob(self, windows: np.ndarray) -> np.ndarray:
        n, V = self.order, self.vocab_size
        windows = np.asarray(windows, dtype=np.int64)
        m = len(windows)
        # ends[:, c] = id of the j-gram ending at column c (j = 1 first, then grown by one token per step)
        ends = windows
        word = [None, windows[:, -1]]  # word[k]: id of the k-gram (context + predicted token) at order k
        ctx = [None, np.zeros(m, dtype=np.int64), windows[:, -2]]  # ctx[k]: id of order k's context (k-1)-gram
        for j in range(2, n + 1):
            grown = np.full((m, n), -1, dtype=np.int64)
            for c in range(j - 1, n):  # a j-gram ending at column c starts at c - j + 1 >= 0
                grown[:, c] = _lookup(self.keys[j], ends[:, c - 1], windows[:, c], V)
            ends = grown
            word.append(ends[:, -1])
            if j < n:
                ctx.append(ends[:, -2])
        p = np.full(m, 1.0 / V)
        for k in range(1, n + 1):
            h, w = ctx[k], word[k]
            s = np.where(h >= 0, self.total[k][np.maximum(h, 0)], 0.0)
            c = np.where(w >= 0, self.counts[k][np.maximum(w, 0)], 0)
            seen = s > 0
            own = np.maximum(c - self.discounts[k][np.minimum(c, 3)], 0.0) / np.where(seen, s, 1.0)
            p = np.where(seen, own + self.gamma[k][np.maximum(h, 0)] * p, p)
        return p


# ---------------------------------------------------------------------------- from shards

def _train_arrays(shards, lang: str, split: str) -> dict:
    if shards.num_segments(split, lang) == 0:
        raise XlingError(f"no {split} segments for language {lang!r} to count; rebuild the shards with that split")
    return {"tokens": shards.tokens(split, lang), "offsets": np.asarray(shards.offsets(split, lang), np.int64),
            "vocab_size": int(shards.vocab_size), "tag": int(shards.lang_token_ids[lang]),
            "eos": int(shards.specials["eos"])}


def fit_unigram(shards, lang: str, split: str = "train") -> Unigram:
    """The add-1/2 unigram of one language, counted on its `split` segments."""
    return Unigram.fit(**_train_arrays(shards, lang, split))


def fit_kneser_ney(shards, lang: str, order: int = DEFAULT_ORDER, split: str = "train") -> KneserNey:
    """The interpolated modified Kneser-Ney model of one language, counted on its `split` segments."""
    return KneserNey.fit(**_train_arrays(shards, lang, split), order=order)


def baseline_bpc(shards, split: str, lang: str, max_tokens: int, order: int = DEFAULT_ORDER,
                 train_split: str = "train") -> dict[str, float]:
    """{"unigram": bits/char, "ngram": bits/char} of one language on the text `clm_eval` scores with the
    same (split, lang, max_tokens); both models counted on `train_split`."""
    out = {}
    for name, model in (("unigram", fit_unigram(shards, lang, train_split)),
                        ("ngram", fit_kneser_ney(shards, lang, order, train_split))):
        nats, chars = model.eval_nll(shards, split, lang, max_tokens)
        out[name] = nats / math.log(2) / max(chars, 1)  # as heldout.bits_per_char (kept free of torch here)
    return out
