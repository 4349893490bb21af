"""Text generation with the xling Transformer: KV-cache decoding, sampling, beam search, streaming.

    from xling.checkpoint import load_run
    from xling.generate import GenerateConfig, generate, stream
    model, tok = load_run("runs/demo")                       # latest checkpoint + the run's tokenizer
    cfg = GenerateConfig(max_new_tokens=60, temperature=0.8, top_p=0.95, seed=1)
    texts = generate(model, tok, ["In the beginning", "Au commencement"], lang=["en", "fr"], cfg=cfg)
    for piece in stream(model, tok, "In the beginning", lang="en", cfg=cfg):
        print(piece, end="", flush=True)                       # complete text only, as it is produced
    for step in stream_steps(model, tok, "In the beginning", lang="en", cfg=cfg):   # one item per token
        n_tokens += step.token is not None                     # (xling serve counts, times and cancels by it)
    hyps = beam_search(step, batch_size=2, num_beams=4, max_new_tokens=50, eos_ids=[2], n_best=4)

Language control: generation in language L feeds `<L>` as the first token (the causal-LM objective
trains on `<L> segment </s> segment </s> ...`) and, when the model has language embeddings, the
language index of L on every position. The index is the tag's id minus the 5 fixed specials, which is
the language's position in corpus order (tags follow corpus order, and the language
index is the position in `Shards.langs`). `</s>` ends a continuation (`GenerateConfig.stop_tokens`).
`GenerateConfig.lang_vocab` with a `LangVocab` (`xling.langvocab`: the tokens seen in each language's training
shards) also masks every other token out of the logits, so a continuation in L is made of L's subwords only.
Text comes back through `xling.detokenize` (the continuation's leading space, stop strings, streaming pieces).

Decoding (`generate_ids`): the prompts are left-padded into one batch; each row gets its own positions
(real tokens counted from 0) and a padding mask, so a row produces what it would produce alone. The
prompt fills a `KVCache` in one call; then each step feeds only the last token. Per step: repetition
penalty (CTRL, over prompt and output), temperature, top-k, top-p, then sampling with a seeded
generator; temperature 0 is greedy (argmax). Rows that have stopped keep feeding padding until every
row has stopped. Generation also ends when the cache reaches the model's `block_size`. A seed fixes
the output of a whole call; with sampling, a row's draws depend on the other rows of its batch.

Beam search (`beam_search`) runs over a `step(tokens, parents) -> log-probs` callable, so the causal LM
(`lm_beam_search`), a prompt-format translation decoder or an encoder-decoder share it. Scores are
sum of log-probs / length ** length_penalty (Hugging Face's convention; length counts the end token).

Speed (bench/generate.py): decoding a small model is memory- and overhead-bound, so the step
loop does as few tensor ops as it can (no logits processors for greedy, stop checks only when there is
something to stop at), each token after the prompt runs `xling.decode._decode` (the model's maths without module
calls, over a preallocated fp32 KV cache written in place; see `xling.decode._LM`), and `precision="bf16"` casts a
copy of the weights to bfloat16. "auto" (the default) takes what this machine's measured table chose for one row
("decode1") or several ("decode", from AUTO_BF16_MIN_ROWS rows); fp32 where the hardware has no native bf16
(`xling.precision`).
Not used: torch.compile of the step (a compiled static-cache step ran slower than eager, 385 vs 528 tok/s,
and with a cache that grows each step every length would be a new graph).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

from xling.decode import _LM
from xling.detokenize import IncrementalDecoder, cut_at_stop, decode_continuation, find_stop
from xling.errors import XlingError
from xling.langvocab import LangVocab
from xling.precision import PRECISIONS, for_precision
from xling.tokenizer import PAD_ID, lang_index
from xling.tokenizer import lang_ids as tag_ids

# beam search keeps num_beams copies of every cached key and value: a million beams sat allocating for a minute
MAX_BEAMS = 64


@dataclass
class GenerateConfig:
    max_new_tokens: int = 100  # tokens to generate at most (also capped by the model's block_size)
    min_new_tokens: int = 0  # stop tokens are not chosen before this many new tokens (sampling/greedy)
    temperature: float = 0.8  # softmax temperature; 0 = greedy (argmax, no sampling)
    top_k: int = 0  # sample only among the k most likely tokens; 0 = off
    top_p: float = 0.95  # nucleus: the smallest set of most likely tokens with mass >= top_p; 1 = off
    repetition_penalty: float = 1.0  # CTRL: logits of seen tokens divided (>0) or multiplied (<0); 1 = off
    stop: list[str] = field(default_factory=list)  # strings that end generation; output is cut before them
    stop_tokens: list[str] = field(default_factory=lambda: ["</s>"])  # tokens that end generation (excluded)
    seed: int | None = 1234  # sampling seed (same seed, same output); None = a fresh random seed
    num_beams: int = 1  # > 1: beam search (deterministic; temperature/top-k/top-p/penalty ignored)
    length_penalty: float = 1.0  # beam score = logprob / length ** length_penalty (> 0 favours longer)
    early_stopping: bool = True  # beam: stop when num_beams hypotheses ended; false: when none can improve
    precision: str = "auto"  # fp32 | bf16 (a bf16 copy of the weights) | auto (measured per CPU)
    # Restrict a continuation in language L to the tokens that occur in L's training text (plus the stop tokens):
    # a young model's sampled salad of other scripts' subwords cannot happen. Needs the run's shards
    # (`LangVocab`; `xling generate` and `xling evaluate` load them); a call given no LangVocab is unrestricted.
    # Off by default: the model then loops in its language where it used to spill into others (repeated 3-grams
    # 0.393 -> 0.429 on the demo model; docs/measurements.md).
    lang_vocab: bool = False

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, not {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens must be in [0, max_new_tokens], not {self.min_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), not {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), not {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), not {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0 (1 = off), not {self.repetition_penalty}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")
        if not 1 <= self.num_beams <= MAX_BEAMS:
            raise ValueError(f"num_beams must be in 1..{MAX_BEAMS}, not {self.num_beams}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")


# ---------------------------------------------------------------------------- language-restricted decoding

def lang_vocab_mask(cfg: GenerateConfig, vocab: LangVocab | None, lang, n_rows: int, vocab_size: int,
             stop_ids: Sequence[int]) -> Tensor | None:
    """The (n_rows, vocab_size) allowed-token mask of a call in `lang` (one code or one per row), or None when
    `cfg.lang_vocab` is off, no vocabulary is given or there is no language."""
    if not cfg.lang_vocab or vocab is None or lang is None:
        return None
    langs = [lang] * n_rows if isinstance(lang, str) else list(lang)
    return vocab.mask(langs, vocab_size, always=stop_ids)


# ---------------------------------------------------------------------------- logits processors

def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL (Keskar et al. 2019): seen tokens' positive logits are divided by `penalty`, negative multiplied.

    logits (B, V) float, seen (B, V) bool. penalty > 1 discourages repeats.
    """
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)  # (B, V)
    return torch.where(seen, penalised, logits)


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits of each row (ties with the k-th kept too); the rest become -inf."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, -math.inf)


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the smallest set of most likely tokens whose
    probability mass is >= p (at least one token); the rest become -inf. logits (B, V)."""
    if p >= 1:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # (B, V) mass of the more likely tokens
    drop_sorted = mass_before >= p  # already enough mass without this token; never drops the first
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, -math.inf)


def _choose(logits: Tensor, cfg: GenerateConfig, gen: torch.Generator | None) -> Tensor:
    """(B, V) float logits -> (B,) next tokens: argmax for temperature 0, else a filtered sample."""
    if cfg.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / cfg.temperature
    logits = top_k_filter(logits, cfg.top_k)
    logits = top_p_filter(logits, cfg.top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=gen).squeeze(1)  # (B,)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------- prompts and language control

def encode_prompts(tokenizer, prompts: Sequence[str], lang: str | Sequence[str] | None
                   ) -> tuple[list[list[int]], list[int] | None]:
    """Token ids of each prompt, `<lang>` first when a language is given, and the language indices.

    lang: one language for all prompts, one per prompt, or None (no tag, no language ids).
    Returns (ids per prompt, language index per prompt or None).
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    langs = [lang] * len(prompts) if lang is None or isinstance(lang, str) else list(lang)
    if lang is not None and not all(isinstance(lg, str) for lg in langs):
        raise TypeError("lang must be one language code, a list of codes (one per prompt), or None")
    if len(langs) != len(prompts):
        raise XlingError(f"got {len(langs)} languages for {len(prompts)} prompts; give one language, "
                         f"or one per prompt")
    tags = tag_ids(tokenizer, sorted(set(langs))) if lang is not None else {}
    ids = []
    for text, lg in zip(prompts, langs, strict=True):
        x = tokenizer.encode(text, add_special_tokens=False).ids
        if lg is not None:
            x = [tags[lg]] + x
        elif not x:
            raise XlingError("an empty prompt needs a language to start from; give --lang or some text")
        ids.append(x)
    rows = {lg: lang_index(tokenizer, lg) for lg in tags}  # language-embedding rows
    index = [rows[lg] for lg in langs] if lang is not None else None
    return ids, index


def stop_token_ids(tokenizer, names: Sequence[str]) -> list[int]:
    """Ids of the `stop_tokens` names, e.g. ["</s>"] -> [2]."""
    out = []
    for name in names:
        i = tokenizer.token_to_id(name)
        if i is None:
            raise XlingError(f"stop token {name!r} is not in the tokenizer's vocabulary; use one of its "
                             f"special tokens such as </s>")
        out.append(i)
    return out


def _tokens(lm: _LM, cfg: GenerateConfig, n_steps: int, stop: Tensor | None, done: Tensor | None,
            allowed: Tensor | None = None) -> Iterator[Tensor]:
    """Yield the (B,) chosen tokens step by step. `done` (B,) bool is shared with the caller, who may
    set rows (stop strings); rows that emit a `stop` token are marked here. Finished rows get PAD_ID.
    `allowed` (B, V) bool: the only tokens a row may choose (`LangVocab.mask`).
    Ends after n_steps or when every row is done."""
    gen = None
    if cfg.temperature > 0:
        gen = torch.Generator(device=lm.logits.device)
        if cfg.seed is None:
            gen.seed()
        else:
            gen.manual_seed(cfg.seed)
    penalty = cfg.repetition_penalty != 1.0
    seen = lm.seen() if penalty else None  # (B, V)
    logits = lm.logits  # (B, V)
    banned = None if allowed is None else ~allowed.to(logits.device)  # (B, V)
    tok = None
    for t in range(n_steps):
        if t:
            logits = lm.step(tok)
        if banned is not None:
            logits = logits.masked_fill(banned, float("-inf"))  # before top-k/top-p, so they pick among allowed
        if penalty:
            logits = apply_repetition_penalty(logits, seen, cfg.repetition_penalty)
        if t < cfg.min_new_tokens and stop is not None:
            logits = logits.index_fill(1, stop, float("-inf"))  # (B, V): no end before min_new_tokens
        tok = _choose(logits, cfg, gen)  # (B,)
        if done is not None:
            tok = tok.masked_fill(done, PAD_ID)  # finished rows feed padding (their output is ignored)
        if penalty:
            seen.scatter_(1, tok[:, None], True)
        yield tok
        if done is not None:
            if stop is not None:
                done |= torch.isin(tok, stop)
            if bool(done.all()):
                return


def _run(model: nn.Module, prompts: list[list[int]], cfg: GenerateConfig, lang_index: list[int] | None,
         stop_ids: Sequence[int], tokenizer=None, allowed: Tensor | None = None) -> list[list[int]]:
    """Sampling/greedy decoding; generated ids per row, without the stop token (or what follows a stop
    string, which only a tokenizer can see)."""
    with _eval_mode(model):
        lm = _LM(model, prompts, lang_index, cfg.max_new_tokens)
        B, dev = len(prompts), lm.logits.device
        stops = cfg.stop if tokenizer is not None else []
        stop = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=dev) if stop_ids else None
        done = torch.zeros(B, dtype=torch.bool, device=dev) if stop is not None or stops else None
        rows: list[list[int]] = [[] for _ in range(B)]
        cols: list[Tensor] = []
        ended = [False] * B  # rows stopped by a stop string (python side)
        for tok in _tokens(lm, cfg, min(cfg.max_new_tokens, lm.max_steps), stop, done, allowed):
            cols.append(tok)
            if stops:  # decode each unfinished row's output so far and look for a stop string
                for r, t in enumerate(tok.tolist()):
                    if ended[r] or t in stop_ids:
                        ended[r] = True
                        continue
                    rows[r].append(t)
                    if find_stop(decode_continuation(tokenizer, prompts[r], rows[r]), stops) >= 0:
                        ended[r] = True
                        done[r] = True
        if stops:
            return rows
        out = torch.stack(cols, dim=1).tolist() if cols else [[] for _ in range(B)]  # (B, steps)
        stop_set = set(stop_ids)
        for r, ids in enumerate(out):
            end = next((i for i, t in enumerate(ids) if t in stop_set), len(ids))
            out[r] = ids[:end]
        return out


def generate_ids(model: nn.Module, prompts: list[list[int]], cfg: GenerateConfig, *,
                 lang_index: list[int] | None = None, stop_ids: Sequence[int] = (),
                 allowed: Tensor | None = None) -> list[list[int]]:
    """Continue token-id prompts; the generated ids of each (stop token excluded).

    The model is used as given (see `for_precision`); `cfg.stop` strings and `cfg.stop_tokens` names
    need a tokenizer and are ignored here: pass `stop_ids` instead. num_beams > 1 runs beam search.
    allowed: (B, V) bool, the tokens each row may produce (`LangVocab.mask`; it includes the stop ids), or None.
    """
    if cfg.num_beams > 1:
        hyps = lm_beam_search(model, prompts, cfg, lang_index=lang_index, eos_ids=stop_ids, allowed=allowed)
        return [h[0].tokens if h else [] for h in hyps]
    return _run(model, prompts, cfg, lang_index, stop_ids, allowed=allowed)


def generate(model: nn.Module, tokenizer, prompts: list[str], lang: str | list[str] | None = None,
             cfg: GenerateConfig | None = None, vocab: LangVocab | None = None) -> list[str]:
    """Continue each prompt in language `lang` (one for all, one per prompt, or None); the new text only.

    The output stops before the first `cfg.stop` string and at a `cfg.stop_tokens` token. With
    `cfg.lang_vocab` and a `vocab`, each continuation uses only tokens seen in its language's training text.
    """
    cfg = cfg or GenerateConfig()
    ids, index = encode_prompts(tokenizer, prompts, lang)
    stop_ids = stop_token_ids(tokenizer, cfg.stop_tokens)
    allowed = lang_vocab_mask(cfg, vocab, lang, len(ids), model.cfg.vocab_size, stop_ids)
    model = for_precision(model, cfg.precision, len(ids) * cfg.num_beams)
    if cfg.num_beams > 1:
        out = generate_ids(model, ids, cfg, lang_index=index, stop_ids=stop_ids, allowed=allowed)
    else:
        out = _run(model, ids, cfg, index, stop_ids, tokenizer, allowed)
    return [cut_at_stop(decode_continuation(tokenizer, p, o), cfg.stop) for p, o in zip(ids, out, strict=True)]


def stream(model: nn.Module, tokenizer, prompt: str, lang: str | None = None,
           cfg: GenerateConfig | None = None, vocab: LangVocab | None = None) -> Iterator[str]:
    """Yield the continuation of one prompt as text pieces, as soon as each piece is complete text.

    The pieces concatenate to what `generate` returns for the same prompt and config. A piece never
    ends inside a multi-byte character or a possible stop string (see `IncrementalDecoder`). Beam
    search cannot stream: with num_beams > 1 the whole output comes as one piece.
    """
    cfg = cfg or GenerateConfig()
    if cfg.num_beams > 1:
        yield from generate(model, tokenizer, [prompt], lang, cfg, vocab)
        return
    for piece in stream_steps(model, tokenizer, prompt, lang, cfg, vocab):
        if piece.text:
            yield piece.text


class Step(NamedTuple):
    text: str  # the text this step completed ("" while a character or a possible stop string is unfinished)
    token: int | None  # the token chosen at this step; None for the last item, the text held back until the end


def stream_steps(model: nn.Module, tokenizer, prompt: str, lang: str | None = None,
                 cfg: GenerateConfig | None = None, vocab: LangVocab | None = None) -> Iterator[Step]:
    """`stream` one decoding step at a time: a `Step` for every generated token (the stop token excluded), then
    one with token None for the text held back to the end, if any. A caller can count and time tokens and stop
    between any two steps (closing the generator ends decoding; `xling serve` does both). Sampling/greedy only."""
    cfg = cfg or GenerateConfig()
    if cfg.num_beams > 1:
        raise ValueError("beam search cannot stream step by step; use generate or stream")
    ids, index = encode_prompts(tokenizer, [prompt], lang)
    stop_ids = set(stop_token_ids(tokenizer, cfg.stop_tokens))
    allowed = lang_vocab_mask(cfg, vocab, lang, 1, model.cfg.vocab_size, sorted(stop_ids))
    model = for_precision(model, cfg.precision, 1)
    dec = IncrementalDecoder(tokenizer, cfg.stop, ids[0])
    with _eval_mode(model):
        lm = _LM(model, ids, index, cfg.max_new_tokens)
        stop_t = torch.tensor(sorted(stop_ids), dtype=torch.long, device=lm.logits.device) if stop_ids else None
        for tok in _tokens(lm, cfg, min(cfg.max_new_tokens, lm.max_steps), stop_t, None, allowed):
            t = int(tok[0])
            if t in stop_ids:
                break
            yield Step(dec.push(t), t)
            if dec.stopped:
                break
    piece = dec.flush()
    if piece:
        yield Step(piece, None)


# ---------------------------------------------------------------------------- beam search

@dataclass
class Hypothesis:
    tokens: list[int]  # generated ids, the end token excluded
    score: float  # logprob / length ** length_penalty: what hypotheses are ranked by
    logprob: float  # sum of the generated tokens' log-probabilities (end token included)


# step(tokens, parents) -> (batch_size * num_beams, V) log-probabilities of the next token
StepFn = Callable[[Tensor | None, Tensor | None], Tensor]


def no_repeat_ngram(step: StepFn, n: int) -> StepFn:
    """Wrap a beam-search step so that no row repeats an n-gram of its own output (fairseq's and Hugging
    Face's `no_repeat_ngram_size`): a token that would complete an n-gram the row already produced gets
    log-probability -inf. Works for any decoder's step; n = 0 returns `step` unchanged."""
    if n <= 0:
        return step
    hist: list[list[int]] = []

    def wrapped(tokens: Tensor | None, parents: Tensor | None) -> Tensor:
        nonlocal hist
        logp = step(tokens, parents)  # (N, V)
        if tokens is None:
            hist = [[] for _ in range(logp.shape[0])]
            return logp
        hist = [hist[p] + [t] for p, t in zip(parents.tolist(), tokens.tolist(), strict=True)]
        banned_rows, banned_tokens = [], []
        for r, h in enumerate(hist):
            if len(h) < n:
                continue
            tail = tuple(h[len(h) - n + 1:])  # the last n - 1 tokens
            for i in range(len(h) - n + 1):
                if tuple(h[i:i + n - 1]) == tail:
                    banned_rows.append(r)
                    banned_tokens.append(h[i + n - 1])
        if banned_rows:
            logp = logp.clone()
            logp[banned_rows, banned_tokens] = -math.inf
        return logp

    return wrapped


def _keep_best(hyps: list[Hypothesis], h: Hypothesis, k: int) -> None:
    hyps.append(h)
    hyps.sort(key=lambda x: -x.score)
    del hyps[k:]


def beam_search(step: StepFn, batch_size: int, *, num_beams: int = 4, max_new_tokens: int = 64,
                eos_ids: Sequence[int] = (), length_penalty: float = 1.0, early_stopping: bool | str = True,
                n_best: int = 1) -> list[list[Hypothesis]]:
    """Beam search over any decoder; per batch entry the n_best hypotheses, best normalised score first.

    step(tokens, parents) returns (batch_size * num_beams, V) log-probabilities (log_softmax) of the next
    token; row b * num_beams + k is beam k of batch entry b.
    - First call: tokens = parents = None; return the distribution after the prompt (every row of an
      entry holds the same prompt; only beam 0 is expanded, the others start at -inf).
    - Later calls: parents (N,) long says that row i now continues the previous call's row parents[i]
      (reorder your state, e.g. a KV cache, with index_select(0, parents)), and tokens (N,) long is the
      token just appended to row i.
    A hypothesis ends at a token of eos_ids (kept only if it ranks among the num_beams best candidates,
    as in Hugging Face) or at max_new_tokens. Score = sum of log-probs / length ** length_penalty with
    length = generated tokens, the end token included. early_stopping=True: an entry is done once
    num_beams hypotheses ended; False: once no running beam can still beat the worst kept hypothesis
    (an exact bound: log-probs only fall, and the bound uses the most favourable remaining length);
    "never": run to max_new_tokens (the same result as False, found more slowly).
    """
    K, B, lp = num_beams, batch_size, length_penalty
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', not {early_stopping!r}")
    if K < 1 or n_best < 1 or n_best > K:
        raise ValueError(f"need 1 <= n_best <= num_beams, got n_best={n_best}, num_beams={K}")
    eos = set(eos_ids)
    filler = min(eos) if eos else 0  # token fed to dead beams (their score is -inf, never kept)
    scores = torch.full((B, K), -math.inf)
    scores[:, 0] = 0.0
    hist: list[list[int]] = [[] for _ in range(B * K)]  # generated tokens of each row
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    done = [False] * B
    tokens = parents = None
    for t in range(max_new_tokens):
        logp = step(tokens, parents).float()  # (B*K, V)
        V = logp.shape[-1]
        cand = (scores.to(logp.device).view(-1, 1) + logp).view(B, K * V)  # (B, K*V) running sums
        top, idx = cand.topk(min(K * (1 + len(eos)), K * V), dim=1)  # enough candidates for K non-end ones
        top, idx = top.tolist(), idx.tolist()
        new_scores, new_parents, new_tokens = [], [], []
        for b in range(B):
            beams: list[tuple[float, int, int]] = []  # (score, parent row, token)
            if not done[b]:
                for rank, (s, j) in enumerate(zip(top[b], idx[b], strict=True)):
                    if s == -math.inf:
                        break
                    k, w = divmod(j, V)
                    if w in eos:
                        if rank < K:
                            _keep_best(finished[b], Hypothesis(hist[b * K + k], s / (t + 1) ** lp, s), K)
                        continue
                    beams.append((s, b * K + k, w))
                    if len(beams) == K:
                        break
                done[b] = _beam_done(finished[b], beams[0][0] if beams else None, K, t + 1, max_new_tokens,
                                     lp, early_stopping)
            beams += [(-math.inf, b * K, filler)] * (K - len(beams))  # dead beams keep the shapes
            for s, p, w in beams:
                new_scores.append(s)
                new_parents.append(p)
                new_tokens.append(w)
        hist = [hist[p] + [w] for p, w in zip(new_parents, new_tokens, strict=True)]
        scores = torch.tensor(new_scores).view(B, K)
        if all(done):
            break
        tokens = torch.tensor(new_tokens, device=logp.device)
        parents = torch.tensor(new_parents, device=logp.device)
    for b in range(B):  # entries cut by max_new_tokens: their running beams are hypotheses too
        if not done[b]:
            for k in range(K):
                s = float(scores[b, k])
                if s > -math.inf:
                    tokens_k = hist[b * K + k]
                    _keep_best(finished[b], Hypothesis(tokens_k, s / max(len(tokens_k), 1) ** lp, s), K)
    return [hyps[:n_best] for hyps in finished]


def _beam_done(hyps: list[Hypothesis], best_running: float | None, K: int, length: int, max_new: int,
               lp: float, early_stopping: bool | str) -> bool:
    """Whether a batch entry can stop after `length` generated tokens."""
    if best_running is None:
        return True  # nothing left to extend
    if len(hyps) < K:
        return False
    if early_stopping == "never":
        return False
    if early_stopping:
        return True
    # A running beam's final sum is <= best_running <= 0 and its final length L is length + 1 .. max_new
    # (just length when it is cut at max_new); s / L**lp is largest at the longest L when lp > 0, else
    # at the shortest.
    best_length = max_new if lp > 0 else min(length + 1, max_new)
    return hyps[-1].score >= best_running / best_length ** lp


def lm_beam_search(model: nn.Module, prompts: list[list[int]], cfg: GenerateConfig, *,
                   lang_index: list[int] | None = None, eos_ids: Sequence[int] = (), n_best: int = 1,
                   allowed: Tensor | None = None) -> list[list[Hypothesis]]:
    """Beam search with the causal LM on token-id prompts (e.g. `<en> source </s> <fr>` for translation).

    Each prompt is copied num_beams times into one KV-cache batch; beams are reordered in the cache.
    allowed: (len(prompts), V) bool, the tokens each prompt's beams may produce, or None.
    """
    K = cfg.num_beams
    rows = [p for p in prompts for _ in range(K)]
    index = None if lang_index is None else [i for i in lang_index for _ in range(K)]
    with _eval_mode(model):
        lm = _LM(model, rows, index, cfg.max_new_tokens)
        # (B*K, V); a beam's row only ever takes parents of its own prompt, so the mask never needs reordering
        banned = None if allowed is None else ~allowed.repeat_interleave(K, dim=0).to(lm.logits.device)

        def logp(logits: Tensor) -> Tensor:
            if banned is not None:
                logits = logits.masked_fill(banned, float("-inf"))  # renormalised over the allowed tokens
            return logits.log_softmax(dim=-1)

        def step(tokens: Tensor | None, parents: Tensor | None) -> Tensor:
            if tokens is None:
                return logp(lm.logits)
            lm.reorder(parents)
            return logp(lm.step(tokens))

        n_steps = min(cfg.max_new_tokens, lm.max_steps)
        return beam_search(step, len(prompts), num_beams=K, max_new_tokens=n_steps, eos_ids=eos_ids,
                           length_penalty=cfg.length_penalty, early_stopping=cfg.early_stopping,
                           n_best=n_best)
