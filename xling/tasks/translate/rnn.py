"""The RNN baseline for translation: a bidirectional GRU encoder and a GRU decoder with attention.

    from xling.tasks.translate.rnn import load_rnn, RNNConfig, save_rnn, train_rnn, translate_ids
    shards = Shards("runs/demo/shards")
    model, summary = train_rnn(shards, [("en", "fr"), ("fr", "en")], RNNConfig(), minutes=1.0, seed=0)
    hyps = translate_ids(model, [shards.segment("test", "en", 0)], "fr", src_lang_tag="en", num_beams=4)
    save_rnn(model, "runs/demo/rnn_mt"); model = load_rnn("runs/demo/rnn_mt")

It is the seeds' encoder-decoder (Bahdanau et al. 2015; Luong et al. 2015), kept beside the
Transformer as a baseline: same tokenizer and shards, same translation pairs, same beam search
(`xling.generate.beam_search`). One model serves several directions (many-to-many):

    encoder input   <src_tag> source ids </s>       (a bidirectional GRU, packed: padding changes nothing)
    decoder input   <tgt_tag> target ids            (the target tag says which language to write)
    decoder labels  target ids </s>

Decoder step (Luong's flow): GRU(previous token's embedding [; previous attentional vector if
`input_feeding`]) -> query q; attention over the encoder states, additive (Bahdanau: v . tanh(W_k e +
W_q q)) or general (Luong: q . W_a e), padding masked; attentional vector a = tanh(W_c [context; q]) of
the embedding size, so the output projection is the shared token embedding: logits = a E^T. The initial
state is tanh(W_b [fwd; bwd]) of the encoder's final states, per layer. Without input feeding, training
runs the decoder GRU over the whole target in one call (much faster on a CPU).

Training: Adam, teacher forcing, token cross-entropy, gradient clipping, pairs over `max_len` tokens on
either side skipped, batches of similar source length, a wall-clock and/or step budget. Saved as
`model.safetensors` + `config.json` (never pickle).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from xling.batches import pad_right
from xling.errors import XlingError
from xling.losses import cross_entropy

PAD, EOS = 0, 2  # fixed special ids (xling.tokenizer)
ATTENTION = ("additive", "general")


@dataclass
class RNNConfig:
    emb_size: int = 256  # token embedding size; also the attentional vector's size (tied output projection)
    hidden_size: int = 256  # GRU hidden size: the decoder's, and each direction's of the encoder
    layers: int = 1  # GRU layers in the encoder and in the decoder (1 or 2)
    dropout: float = 0.1  # dropout on embeddings, between GRU layers and before the output projection
    attention: str = "general"  # attention score: "general" (Luong, multiplicative) | "additive" (Bahdanau)
    input_feeding: bool = False  # feed the previous attentional vector to the decoder (slower: token loop)
    lr: float = 1e-3  # Adam learning rate
    batch_size: int = 32  # sentence pairs per step
    max_len: int = 64  # pairs with more tokens than this on either side (specials excluded) are skipped
    clip: float = 1.0  # gradient norm clipping
    # training cross-entropy label smoothing (the validation loss is plain). Off: at 10 minutes on en<->fr/ru,
    # 0.1 lowered test BLEU en->fr / fr->en from 5.2 / 7.3 to 4.3 / 6.8
    label_smoothing: float = 0.0
    precision: str = "fp32"  # training: fp32 | bf16 (autocast) | auto (this CPU's measured choice); decoding is fp32

    def __post_init__(self):
        for name in ("emb_size", "hidden_size", "batch_size", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.layers not in (1, 2):
            raise ValueError(f"layers must be 1 or 2, not {self.layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.attention not in ATTENTION:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION)}, not {self.attention!r}")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ValueError(f"precision must be fp32, bf16 or auto, not {self.precision!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), not {self.label_smoothing}")
        if not self.lr > 0 or not self.clip > 0:
            raise ValueError(f"lr and clip must be > 0, not {self.lr} and {self.clip}")


class RNNTranslator(nn.Module):
    """Bidirectional GRU encoder + attention GRU decoder over one shared, tied token embedding."""

    def __init__(self, cfg: RNNConfig, vocab_size: int, lang_token_ids: dict[str, int]):
        super().__init__()
        self.cfg, self.vocab_size, self.lang_token_ids = cfg, vocab_size, dict(lang_token_ids)
        E, H, L = cfg.emb_size, cfg.hidden_size, cfg.layers
        drop = cfg.dropout if L > 1 else 0.0  # GRU dropout acts between layers only
        self.emb = nn.Embedding(vocab_size, E, padding_idx=PAD)
        self.encoder = nn.GRU(E, H, L, batch_first=True, bidirectional=True, dropout=drop)
        self.bridge = nn.Linear(2 * H, H)  # encoder final states (fwd; bwd) -> decoder initial state
        self.decoder = nn.GRU(E + (E if cfg.input_feeding else 0), H, L, batch_first=True, dropout=drop)
        self.att_key = nn.Linear(2 * H, H, bias=False)  # W_a (general: q . W_a e) or W_k (additive)
        if cfg.attention == "additive":  # v . tanh(W_k e + W_q q)
            self.att_query, self.att_v = nn.Linear(H, H), nn.Linear(H, 1, bias=False)
        self.combine = nn.Linear(2 * H + H, E)  # W_c: [context; q] -> attentional vector
        self.drop = nn.Dropout(cfg.dropout)

    def encode(self, src: Tensor, src_len: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """src (B,S) right-padded, src_len (B,) -> states (B,S,2H), keys (B,S,H), mask (B,S), h0 (L,B,H)."""
        B, S = src.shape
        x = self.drop(self.emb(src))  # (B, S, E)
        packed = pack_padded_sequence(x, src_len.cpu(), batch_first=True, enforce_sorted=False)
        out, h = self.encoder(packed)  # h (2L, B, H), in the batch's order
        states = pad_packed_sequence(out, batch_first=True, total_length=S)[0]  # (B, S, 2H), zeros at padding
        L = self.cfg.layers
        h = h.view(L, 2, B, -1).permute(0, 2, 1, 3).reshape(L, B, -1)  # (L, B, 2H): [fwd; bwd] per layer
        h0 = torch.tanh(self.bridge(h))  # (L, B, H)
        mask = torch.arange(S, device=src.device)[None, :] < src_len[:, None]  # (B, S) True = real token
        return states, self.att_key(states), mask, h0

    def attend(self, q: Tensor, states: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        """q (B, T, H) -> attentional vectors (B, T, E)."""
        if self.cfg.attention == "general":
            scores = q @ keys.transpose(1, 2)  # (B, T, S)
        else:
            hid = torch.tanh(keys[:, None] + self.att_query(q)[:, :, None])  # (B, T, S, H)
            scores = self.att_v(hid).squeeze(-1)  # (B, T, S)
        weights = scores.masked_fill(~mask[:, None, :], -math.inf).softmax(-1)  # (B, T, S)
        context = weights @ states  # (B, T, 2H)
        return torch.tanh(self.combine(torch.cat([context, q], -1)))  # (B, T, E)

    def logits(self, att: Tensor) -> Tensor:
        return F.linear(self.drop(att), self.emb.weight)  # (..., V): output projection tied to the embedding

    def step(self, tokens: Tensor, h: Tensor, feed: Tensor | None, states: Tensor, keys: Tensor,
             mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One decoder step: tokens (B,) -> (logits (B, V), new h (L, B, H), attentional vector (B, E))."""
        x = self.drop(self.emb(tokens))[:, None]  # (B, 1, E)
        if self.cfg.input_feeding:
            x = torch.cat([x, feed[:, None]], -1)  # (B, 1, 2E)
        q, h = self.decoder(x, h)  # q (B, 1, H)
        att = self.attend(q, states, keys, mask)  # (B, 1, E)
        return self.logits(att[:, 0]), h, att[:, 0]

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing: src (B, S), src_len (B,), tgt_in (B, T) = <tgt_tag> y... -> logits (B, T, V)."""
        states, keys, mask, h = self.encode(src, src_len)
        if not self.cfg.input_feeding:  # the whole target in one GRU call; padding at the end only
            q, _ = self.decoder(self.drop(self.emb(tgt_in)), h)  # (B, T, H)
            return self.logits(self.attend(q, states, keys, mask))  # (B, T, V)
        feed = states.new_zeros(src.shape[0], self.cfg.emb_size)  # (B, E)
        out = []
        for t in range(tgt_in.shape[1]):
            logits, h, feed = self.step(tgt_in[:, t], h, feed, states, keys, mask)
            out.append(logits)
        return torch.stack(out, 1)  # (B, T, V)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ---------------------------------------------------------------------------- data

def _pad(rows: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """Right-pad id lists -> (ids (B, T) long, lengths (B,) long)."""
    ids, mask = pad_right(rows, PAD)
    return ids, mask.sum(1)


class _Pairs:
    """The length-capped translation pairs of some directions: (direction, src segment, tgt segment) rows."""

    def __init__(self, shards, split: str, directions: Sequence[tuple[str, str]], max_len: int):
        self.shards, self.split, self.directions = shards, split, list(directions)
        rows, lens = [], []
        for d, (a, b) in enumerate(self.directions):
            p = np.asarray(shards.pairs(split, a, b), dtype=np.int64)  # (M, 2)
            la, lb = np.diff(shards.offsets(split, a))[p[:, 0]], np.diff(shards.offsets(split, b))[p[:, 1]]
            keep = (la <= max_len) & (lb <= max_len)
            rows.append(np.column_stack([np.full(int(keep.sum()), d), p[keep]]))  # (M', 3)
            lens.append(la[keep])
        self.rows = np.concatenate(rows) if rows else np.zeros((0, 3), np.int64)  # (N, 3)
        self.src_len = np.concatenate(lens) if lens else np.zeros(0, np.int64)  # (N,)

    def batch(self, idx: np.ndarray) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Rows idx -> (src (B,S), src_len (B,), tgt_in (B,T), tgt_out (B,T)); specials added here."""
        tags, src, tin, tout = self.shards.lang_token_ids, [], [], []
        for d, i, j in self.rows[idx]:
            (a, b), seg = self.directions[d], self.shards.segment
            x, y = seg(self.split, a, int(i)).tolist(), seg(self.split, b, int(j)).tolist()
            src.append([tags[a], *x, EOS])
            tin.append([tags[b], *y])
            tout.append([*y, EOS])
        (s, s_len), (ti, _), (to, _) = _pad(src), _pad(tin), _pad(tout)
        return s, s_len, ti, to

    def epoch(self, rng: np.random.Generator, batch_size: int) -> list[np.ndarray]:
        """Shuffled batches of similar source length: sort within pools of 50 batches, shuffle batches."""
        order, pool, out = rng.permutation(len(self.rows)), 50 * batch_size, []
        for k in range(0, len(order), pool):
            chunk = order[k:k + pool]
            chunk = chunk[np.argsort(self.src_len[chunk], kind="stable")]
            out += [chunk[m:m + batch_size] for m in range(0, len(chunk), batch_size)]
        return [out[i] for i in rng.permutation(len(out))]


def _check_directions(shards, directions) -> list[tuple[str, str]]:
    directions = [tuple(d) for d in directions]
    if not directions:
        raise XlingError("no translation directions given; pass e.g. [('en', 'fr'), ('fr', 'en')]")
    for d in directions:
        if len(d) != 2 or d[0] == d[1]:
            raise XlingError(f"translation direction {d!r} must be two different languages, e.g. ('en','fr')")
        for lang in (x for x in d if x not in shards.langs):
            raise XlingError(f"translation direction {d[0]}->{d[1]}: language {lang!r} is not in the shards "
                             f"at {shards.path} (they have {', '.join(shards.langs)})")
    return directions


# ---------------------------------------------------------------------------- training

def train_rnn(shards, directions: Sequence[tuple[str, str]], cfg: RNNConfig | None = None, *,
              minutes: float | None = None, max_steps: int | None = None, seed: int = 0,
              valid_pairs: int = 200) -> tuple[RNNTranslator, dict]:
    """Train a model on the shards' train pairs of `directions` until `minutes` or `max_steps` is spent.

    Returns (model in eval mode, summary: steps, sentences, seconds, sentences_per_s, tokens_per_s (target
    tokens), loss (mean of the last 20 steps), valid_loss (up to `valid_pairs` valid pairs; None if none),
    params, pairs).
    """
    from xling.precision import autocast_dtype, training_autocast
    from xling.progress import progress

    cfg = cfg or RNNConfig()
    directions = _check_directions(shards, directions)
    if minutes is None and max_steps is None:
        raise XlingError("train_rnn needs a budget: minutes=..., max_steps=... or both")
    data = _Pairs(shards, "train", directions, cfg.max_len)
    if len(data.rows) == 0:
        raise XlingError(f"no training pairs of at most {cfg.max_len} tokens per side for "
                         f"{', '.join(a + '->' + b for a, b in directions)}; raise rnn max_len")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = RNNTranslator(cfg, shards.vocab_size, shards.lang_token_ids)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)  # one kernel (CPU): the trainers' choice
    amp = autocast_dtype(cfg.precision, torch.device("cpu"))  # None = fp32 (also inside a caller's autocast)
    budget = math.inf if minutes is None else minutes * 60.0
    bar = progress(total=max_steps if minutes is None else round(budget), desc="rnn-mt",
                   unit="step" if minutes is None else "s")
    steps = sentences = tokens = 0
    elapsed, losses, t0 = 0.0, [], time.perf_counter()
    model.train()
    with bar:
        while not (steps and (elapsed >= budget or (max_steps is not None and steps >= max_steps))):
            for idx in data.epoch(rng, cfg.batch_size):
                with training_autocast("cpu", amp):
                    loss, n_tok = _loss(model, data.batch(idx), cfg.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                opt.step()
                steps, sentences = steps + 1, sentences + len(idx)
                tokens += n_tok
                losses = (losses + [loss.item()])[-20:]
                elapsed = time.perf_counter() - t0
                bar.update(1 if minutes is None else min(round(elapsed), bar.total) - bar.n)
                bar.set_postfix_str(f"loss {np.mean(losses):.3f} sent/s {sentences / elapsed:,.0f}",
                                    refresh=False)
                if elapsed >= budget or (max_steps is not None and steps >= max_steps):
                    break
    seconds = time.perf_counter() - t0
    model.eval()
    return model, {"steps": steps, "sentences": sentences, "seconds": round(seconds, 2),
                   "sentences_per_s": sentences / seconds, "tokens_per_s": tokens / seconds,
                   "loss": float(np.mean(losses)), "valid_loss": _valid_loss(model, shards, directions, cfg,
                                                                            valid_pairs, seed),
                   "params": model.num_params(), "pairs": len(data.rows)}


@torch.no_grad()
@torch.autocast("cpu", enabled=False)
def _valid_loss(model: RNNTranslator, shards, directions, cfg: RNNConfig, n: int, seed: int) -> float | None:
    """Token cross-entropy on up to n valid pairs (a fixed sample), or None when the split has none."""
    try:
        data = _Pairs(shards, "valid", directions, cfg.max_len)
    except XlingError:  # no valid pairs for some direction
        return None
    if n <= 0 or len(data.rows) == 0:
        return None
    pick = np.sort(np.random.default_rng(seed).permutation(len(data.rows))[:n])
    out = [_loss(model, data.batch(pick[k:k + cfg.batch_size])) for k in range(0, len(pick), cfg.batch_size)]
    return sum(float(loss) * n for loss, n in out) / sum(n for _, n in out)


def _loss(model: RNNTranslator, batch: tuple[Tensor, ...], label_smoothing: float = 0.0) -> tuple[Tensor, int]:
    """Mean token cross-entropy of a (src, src_len, tgt_in, tgt_out) batch, and its target token count."""
    src, src_len, tgt_in, tgt_out = batch
    logits = model(src, src_len, tgt_in)  # (B, T, V)
    loss = cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD, label_smoothing=label_smoothing)
    return loss, int((tgt_out != PAD).sum())


# ---------------------------------------------------------------------------- decoding

def _tag(model: RNNTranslator, tag: int | str, what: str) -> int:
    tags = model.lang_token_ids
    if isinstance(tag, str):
        if tag not in tags:
            raise XlingError(f"{what} language {tag!r} is unknown to this RNN model "
                             f"(it has {', '.join(tags)})")
        return tags[tag]
    if int(tag) not in tags.values():
        raise XlingError(f"{what} language tag id {tag} is not one of this RNN model's tags {tags}")
    return int(tag)


def _encoder_inputs(model: RNNTranslator, src_ids_list, src_lang_tag: int | str | None) -> list[list[int]]:
    rows = [np.asarray(r, dtype=np.int64).tolist() for r in src_ids_list]
    if src_lang_tag is not None:
        tag = _tag(model, src_lang_tag, "source")
        return [[tag, *r, EOS] for r in rows]
    tags = set(model.lang_token_ids.values())
    for i, r in enumerate(rows):
        if len(r) < 2 or r[0] not in tags or r[-1] != EOS:
            raise XlingError(f"source row {i} is not `<src_tag> ids </s>`; "
                             f"pass raw ids with src_lang_tag=...")
    return rows


@torch.no_grad()
@torch.autocast("cpu", enabled=False)  # fp32 even inside a caller's bf16 autocast
def translate_ids(model: RNNTranslator, src_ids_list: Sequence[Sequence[int]], tgt_lang_tag: int | str,
                  num_beams: int = 4, max_new_tokens: int | None = None, *,
                  src_lang_tag: int | str | None = None, length_penalty: float = 1.0,
                  early_stopping: bool | str = True, batch_size: int = 32,
                  no_repeat_ngram: int = 0) -> list[list[int]]:
    """Translate token-id rows into the language of `tgt_lang_tag` (an id or a code): the best hypothesis
    of each row, without specials.

    Rows are raw ids when `src_lang_tag` is given (`<src_tag>` and `</s>` are added), else complete
    encoder inputs `<src_tag> ids </s>`. max_new_tokens defaults to 2 * the longest source + 10.
    early_stopping as in `beam_search` (True, as the Transformer's translate: an entry stops once
    num_beams hypotheses ended, which can drop a late-ending best one; False searches until none can win).
    no_repeat_ngram: no output repeats one of its own n-grams of this size (0 = off), as the Transformer's.
    """
    from xling.generate import beam_search
    from xling.generate import no_repeat_ngram as no_repeat

    if num_beams < 1:
        raise XlingError(f"num_beams must be >= 1, not {num_beams}")
    tgt = _tag(model, tgt_lang_tag, "target")
    rows = _encoder_inputs(model, src_ids_list, src_lang_tag)
    model.eval()
    out: list[list[int]] = [[] for _ in rows]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths decode together
    for k in range(0, len(order), batch_size):
        chunk = [rows[i] for i in order[k:k + batch_size]]
        limit = max_new_tokens if max_new_tokens is not None else 2 * len(chunk[-1]) + 10
        step = no_repeat(_beam_step(model, chunk, tgt, num_beams), no_repeat_ngram)
        hyps = beam_search(step, len(chunk), num_beams=num_beams,
                           max_new_tokens=limit, eos_ids=[EOS], length_penalty=length_penalty,
                           early_stopping=early_stopping)
        for i, h in zip(order[k:k + batch_size], hyps, strict=True):
            out[i] = h[0].tokens if h else []
    return out


def _beam_step(model: RNNTranslator, rows: list[list[int]], tgt: int, K: int):
    """The step(tokens, parents) -> (B*K, V) log-probs callable that beam_search drives."""
    src, src_len = _pad(rows)
    states, keys, mask, h = model.encode(src, src_len)
    states, keys, mask = (t.repeat_interleave(K, 0) for t in (states, keys, mask))  # (B*K, ...) by entry
    st = {"h": h.repeat_interleave(K, 1), "feed": states.new_zeros(states.shape[0], model.cfg.emb_size)}

    def step(tokens: Tensor | None, parents: Tensor | None) -> Tensor:
        if tokens is None:
            tokens = torch.full((states.shape[0],), tgt, dtype=torch.long)  # (B*K,) start at the target tag
        else:  # beams continue other rows: reorder the state (parents stay inside their entry)
            st["h"], st["feed"] = st["h"].index_select(1, parents), st["feed"].index_select(0, parents)
        logits, st["h"], st["feed"] = model.step(tokens, st["h"], st["feed"], states, keys, mask)
        return logits.log_softmax(-1)  # (B*K, V)

    return step


# ---------------------------------------------------------------------------- save / load

def save_rnn(model: RNNTranslator, path: str | Path) -> Path:
    """Write `model.safetensors` + `config.json` into directory `path` (atomically; replaces it)."""
    from safetensors.torch import save_file

    from xling.files import atomic_dir

    with atomic_dir(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(
            {"kind": "xling-rnn-mt", "config": dataclasses.asdict(model.cfg), "vocab_size": model.vocab_size,
             "lang_token_ids": model.lang_token_ids}, indent=2) + "\n", encoding="utf-8")
    return Path(path)


def load_rnn(path: str | Path) -> RNNTranslator:
    """The model saved by `save_rnn` in `path`, in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise XlingError(f"{path} is not a saved RNN translation model (needs config.json and "
                         f"model.safetensors); train one with train_rnn and save it with save_rnn")
    try:
        meta = json.loads((path / "config.json").read_text(encoding="utf-8"))
        model = RNNTranslator(RNNConfig(**meta["config"]), int(meta["vocab_size"]), meta["lang_token_ids"])
        model.load_state_dict(load_file(str(path / "model.safetensors")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, RuntimeError,
            SafetensorError) as e:
        raise XlingError(f"RNN model in {path} cannot be loaded ({type(e).__name__}: {str(e)[:120]}); "
                         f"retrain and save it again") from None
    return model.eval()
