"""Add a language to a trained tokenizer and model without changing any existing id (issue 25, its first half).

    tok2, new_ids = extend_tokenizer(tok, texts_it, "it", new_pieces=1500)   # ids 0..V-1 unchanged; <it> = V
    model2 = extend_model(model, tok, tok2, new_ids, init="mean")            # new rows initialised, old rows kept

Tokenizer (the bpe kind, xling's default): a BPE with the run's normalizer and pre-tokenizer is trained on the new
language's text alone; its merges are then walked in their own order and a merge is kept when both halves are
already pieces (old, or kept before it) and its result is not; characters the old vocabulary lacks (letters of a new
script) are added first. Kept pieces and merges are appended after every existing id and merge, and the language tag
`<lang>` takes the first new id. Every old id keeps its piece, so old shards decode identically; text of the old
languages may encode differently where a new merge applies after every old one (Glot500 extends SentencePiece the
same way).

New embedding rows (`init`):
- "mean": a piece's row is the mean of the rows of the old pieces the old tokenizer splits it into (its surface
  string through the old BPE model, byte fallback included): the piece starts where the model already reads that
  string (as FOCUS and WECHSEL start from overlapping pieces, without their external embeddings);
- "random": N(0, 0.02), the model's own initialisation.
The tag's row is the mean of the old tags' rows in either case, and a model with language embeddings gets one more
row, the mean of the old ones. An untied output layer gets the same treatment as the input embeddings.
"""

from __future__ import annotations

import json
import unicodedata

import torch
from tokenizers import Tokenizer

from xling.errors import XlingError
from xling.model import ModelConfig, Transformer
from xling.tokenizer import META_SPACE, TokenizerConfig, lang_tag, new_tokenizer, tag_langs

INITS = ("mean", "random")


def _merge_pair(m) -> tuple[str, str]:
    return tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1))  # tokenizers >= 0.20 writes pairs as lists


def extend_tokenizer(tok: Tokenizer, texts: list[str], lang: str, *, new_pieces: int = 2000,
                     min_frequency: int = 2) -> tuple[Tokenizer, list[int]]:
    """(extended tokenizer, new ids: the tag first, then the pieces in id order). See the module docstring."""
    spec = json.loads(tok.to_str())
    model = spec["model"]
    if model.get("type") != "BPE":
        raise XlingError(f"only a bpe tokenizer can be extended (this one is {model.get('type')}); train the run "
                         f"with tokenizer.kind = \"bpe\", the default")
    if lang_tag(lang) in tok.get_vocab():
        raise XlingError(f"the tokenizer already has {lang_tag(lang)} (its languages: {', '.join(tag_langs(tok))}); "
                         f"a language is added once")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise XlingError(f"no text for {lang}: give at least one non-empty line")
    if new_pieces < 0:
        raise XlingError(f"new_pieces must be >= 0, not {new_pieces}")

    # the run's normalizer and pre-tokenizer, a BPE of the new language's text alone; 3x the merges asked for, as
    # many of its pieces are already in the old vocabulary (a third to a half on an Italian Bible)
    alphabet = sorted({c for t in texts for c in unicodedata.normalize("NFC", t) if not c.isspace()} | {META_SPACE})
    fresh, trainer = new_tokenizer(TokenizerConfig(kind="bpe", vocab_size=len(alphabet) + 3 * new_pieces + 1,
                                                    byte_fallback=False, min_frequency=min_frequency), ["<unk>"])
    fresh.normalizer = tok.normalizer
    fresh.train_from_iterator(texts, trainer=trainer, length=len(texts))
    fresh_model = json.loads(fresh.to_str())["model"]

    vocab: dict[str, int] = model["vocab"]
    old_size = tok.get_vocab_size()  # the model's vocabulary and every added token
    next_id = old_size + 1  # old_size is the tag's
    added: list[str] = []
    for piece in sorted(fresh_model["vocab"], key=fresh_model["vocab"].get):  # single characters first
        if len(piece) == 1 and piece not in vocab and piece != "<unk>":
            vocab[piece] = next_id
            added.append(piece)
            next_id += 1
    merges = []
    for m in fresh_model["merges"]:
        if len(added) >= new_pieces:
            break
        a, b = _merge_pair(m)
        if a in vocab and b in vocab and a + b not in vocab:
            vocab[a + b] = next_id
            added.append(a + b)
            merges.append(m)
            next_id += 1
    model["merges"] = model["merges"] + merges
    vocab[lang_tag(lang)] = old_size  # in the model's vocabulary too, as the trained tags are
    spec["added_tokens"].append({"id": old_size, "content": lang_tag(lang), "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": False, "special": True})
    out = Tokenizer.from_str(json.dumps(spec))
    for i in range(old_size):  # the contract: nothing that was there moved
        if out.id_to_token(i) != tok.id_to_token(i):
            raise RuntimeError(f"extension moved id {i}: {tok.id_to_token(i)!r} -> {out.id_to_token(i)!r}")
    if out.encode(lang_tag(lang)).ids != [old_size]:
        raise RuntimeError(f"{lang_tag(lang)} does not encode to the single id {old_size}")
    return out, [old_size] + [vocab[p] for p in added]


def piece_parts(tok_old: Tokenizer, piece: str) -> list[int]:
    """Old ids of a piece's surface string (as the old BPE model splits it, byte fallback included)."""
    return [t.id for t in tok_old.model.tokenize(piece)]


def _new_rows(weight: torch.Tensor, tok_old: Tokenizer, tok_new: Tokenizer, new_ids: list[int], init: str,
              tag_rows: list[int], gen: torch.Generator) -> torch.Tensor:
    """(len(new_ids), D): the tag's row, then each piece's, by `init`."""
    rows = []
    for i in new_ids:
        if i == new_ids[0]:
            rows.append(weight[tag_rows].mean(0))
        elif init == "mean":
            rows.append(weight[piece_parts(tok_old, tok_new.id_to_token(i))].mean(0))
        else:
            rows.append(torch.randn(weight.shape[1], generator=gen, dtype=weight.dtype) * 0.02)
    return torch.stack(rows)


@torch.no_grad()
def extend_model(model: Transformer, tok_old: Tokenizer, tok_new: Tokenizer, new_ids: list[int], *,
                 init: str = "mean", seed: int = 0) -> Transformer:
    """A copy of `model` over `tok_new`'s vocabulary (and one more language embedding when it has them): old rows
    and every other weight unchanged, new rows by `init` (see the module docstring)."""
    if init not in INITS:
        raise XlingError(f"init must be one of {', '.join(INITS)}, not {init!r}")
    old_v, new_v = model.cfg.vocab_size, tok_new.get_vocab_size()
    if sorted(new_ids) != list(range(old_v, new_v)):
        raise XlingError(f"the new ids must be exactly {old_v}..{new_v - 1}, the ids the extension appended; the "
                         f"model has {old_v} rows: extend the tokenizer this model was trained with")
    n_langs = model.cfg.n_langs + (1 if model.cfg.n_langs else 0)
    cfg = ModelConfig(**{**vars(model.cfg), "vocab_size": new_v, "n_langs": n_langs})
    out = Transformer(cfg).to(next(model.parameters()).device)
    state = model.state_dict()
    gen = torch.Generator().manual_seed(seed)
    tag_rows = [tok_old.token_to_id(lang_tag(lg)) for lg in tag_langs(tok_old)]
    for name in ("wte.weight", "lm_out.weight"):
        if name in state:
            old = state[name]
            state[name] = torch.cat([old, _new_rows(old.float(), tok_old, tok_new, new_ids, init, tag_rows,
                                                    gen).to(old.dtype)])
    if "lang_emb.weight" in state:
        old = state["lang_emb.weight"]
        state["lang_emb.weight"] = torch.cat([old, old.mean(0, keepdim=True)])
    out.load_state_dict(state)
    return out
