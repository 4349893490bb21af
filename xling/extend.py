"""Add a language to a trained tokenizer and model without changing any existing id (issue 25, its first half).

    tok2, new_ids = extend_tokenizer(tok, texts_it, "it", new_pieces=1500)   # ids 0..V-1 unchanged; <it> = V
    model2 = extend_model(model, tok, tok2, init="mean")                     # new rows initialised, old rows kept

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
row, the mean of the old ones.
An untied output layer's new rows all start at the mean of its old rows, whatever `init` (Hewitt 2021): a new id's
logit is then the mean of the old ids' logits, so by Jensen each new id gets at most the old ids' mean probability
and the old languages' next-token loss rises by at most log(1 + new / old ids) before any step. Rows started like
the input embeddings (their parts' rows, or LSI) take the probability of the pieces they resemble instead, and the
old languages written in the same script start several percent worse (docs/measurements.md).
"""

from __future__ import annotations

import json
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from xling.checkpoint import load_run
from xling.corpus import Corpus
from xling.errors import XlingError
from xling.langs import lang_scripts
from xling.model import ModelConfig, Transformer
from xling.progress import format_table
from xling.textmetrics import script_purity
from xling.tokenizer import (
    META_SPACE,
    TokenizerConfig,
    lang_tag,
    load_tokenizer,
    new_tokenizer,
    report_split,
    tag_langs,
    tokenizer_report,
    write_tokenizer,
)
from xling.train_config import EXTEND_INITS

MIN_LINES = 100  # train lines of a language to add, at the least: fewer teach no pieces worth a vocabulary row


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
              gen: torch.Generator) -> torch.Tensor:
    """(len(new_ids), D): a tag's row is the mean of the old tags' rows; a piece's by `init`."""
    tag_rows = [tok_old.token_to_id(lang_tag(lg)) for lg in tag_langs(tok_old)]
    new_tags = {tok_new.token_to_id(lang_tag(lg)) for lg in tag_langs(tok_new)}
    rows = []
    for i in new_ids:
        if i in new_tags:
            rows.append(weight[tag_rows].mean(0))
        elif init == "mean":
            rows.append(weight[piece_parts(tok_old, tok_new.id_to_token(i))].mean(0))
        else:
            rows.append(torch.randn(weight.shape[1], generator=gen, dtype=weight.dtype) * 0.02)
    return torch.stack(rows)


@torch.no_grad()
def extend_model(model: Transformer, tok_old: Tokenizer, tok_new: Tokenizer, *, init: str = "mean",
                 seed: int = 0) -> Transformer:
    """A copy of `model` over `tok_new`, an extension of `tok_old` (the tokenizer the model was trained with): the
    rows of the ids `tok_new` added start by `init` (see the module docstring), every other weight as it was; a
    language embedding is added for each new tag when the model has them. A model with spare rows past its
    tokenizer's ids (model.vocab_size larger) keeps its size while they suffice."""
    if init not in ("mean", "random"):  # "lsi" needs the aligned text: `start_from_run`
        raise XlingError(f"init must be mean or random, not {init!r}")
    old_v, new_v = tok_old.get_vocab_size(), tok_new.get_vocab_size()
    moved = next((i for i in range(old_v) if tok_new.id_to_token(i) != tok_old.id_to_token(i)), None)
    if moved is not None or new_v < old_v or model.cfg.vocab_size < old_v:
        raise XlingError(f"the new tokenizer is not an extension of the model's (id {moved} differs, or it is "
                         f"smaller); extend the tokenizer this model was trained with")
    new_ids = list(range(old_v, new_v))
    n_langs = len(tag_langs(tok_new)) if model.cfg.n_langs else 0
    rows = max(model.cfg.vocab_size, new_v)
    cfg = ModelConfig(**{**vars(model.cfg), "vocab_size": rows, "n_langs": n_langs})
    out = Transformer(cfg).to(next(model.parameters()).device)
    state = model.state_dict()
    gen = torch.Generator().manual_seed(seed)
    for name in ("wte.weight", "lm_out.weight"):
        if name in state and new_ids:
            w = state[name]
            w = torch.cat([w, w.new_zeros(rows - len(w), w.shape[1])])  # (rows, D); spare rows kept as they were
            if name == "wte.weight":
                w[old_v:new_v] = _new_rows(w[:old_v].float(), tok_old, tok_new, new_ids, init, gen).to(w.dtype)
            else:  # the output layer: every new row at the old rows' mean (module docstring)
                w[old_v:new_v] = w[:old_v].float().mean(0).to(w.dtype)
            state[name] = w
    if "lang_emb.weight" in state:
        old = state["lang_emb.weight"]
        state["lang_emb.weight"] = torch.cat([old, old.mean(0, keepdim=True).expand(n_langs - len(old), -1)])
    out.load_state_dict(state)
    return out


def extend_run_tokenizer(corpus: Corpus, cfg: TokenizerConfig, out_dir: str | Path, alpha: float | None) -> dict:
    """The tokenizer stage with `tokenizer.extend` set: the named tokenizer (a folder, or a run directory's
    `tokenizer/`) with every corpus language it lacks added (`extend_tokenizer` on that language's train text, at
    most `max_sentences` lines), written like a trained one. The report gains `extension`: each added language's
    fertility and parity before and after. Returns the report."""
    base_dir = Path(cfg.extend)
    base_dir = base_dir / "tokenizer" if (base_dir / "tokenizer" / "tokenizer.json").is_file() else base_dir
    base = load_tokenizer(base_dir)
    have = tag_langs(base)
    if have != corpus.langs[:len(have)]:
        raise XlingError(f"tokenizer.extend: {base_dir} has the languages {', '.join(have)}; the corpus must list "
                         f"them first and in that order ({', '.join(corpus.langs)}), then the languages to add")
    added = corpus.langs[len(have):]
    if not added:  # the same languages: the tokenizer as it is (a run continued on more text of them)
        print(f"tokenizer: tokenizer.extend: the corpus has no language that {base_dir} lacks; its tokenizer is "
              f"kept as it is", file=sys.stderr)
    tok = base
    t0 = time.perf_counter()
    for lang in added:
        texts = corpus.texts("train", lang)[:cfg.max_sentences]
        if len(texts) < MIN_LINES:
            raise XlingError(f"the corpus has {len(texts)} train line(s) of {lang}; adding a language needs at least "
                             f"{MIN_LINES} to learn its pieces from: give more text")
        purity = script_purity("\n".join(texts[:2000]), lang)
        if purity is not None and purity < 0.8:
            print(f"tokenizer: warning: {1 - purity:.0%} of the letters of the {lang} text are not in "
                  f"{', '.join(lang_scripts(lang))}, the script(s) {lang} is written in; check that the text is {lang}",
                  file=sys.stderr)
        tok, _ = extend_tokenizer(tok, texts, lang, new_pieces=cfg.extend_pieces, min_frequency=cfg.min_frequency)
    seconds = time.perf_counter() - t0
    split = report_split(corpus)
    report = tokenizer_report(tok, corpus, split)
    before = tokenizer_report(base, corpus, split)["langs"]
    report["extension"] = {"base": str(base_dir), "base_vocab_size": base.get_vocab_size(), "added": added,
                           "seconds": round(seconds, 2),
                           "langs": {lg: {k: {"before": before[lg][k], "after": report["langs"][lg][k]}
                                          for k in ("fertility", "parity")} for lg in added}}
    write_tokenizer(tok, corpus, cfg, out_dir, report, alpha=alpha)
    return report


def start_from_run(base: str | Path, model_cfg: ModelConfig, tokenizer_dir: str | Path, *, init: str = "mean",
                   seed: int = 0, shards=None, langs: list[str] | None = None) -> Transformer:
    """`train.init_from`: the base run's trained model over this run's tokenizer, an extension of the base's
    (`extend_model` starts the rows of the new ids; init "lsi" then maps `shards`' aligned LSI onto them, see
    `lsi_rows`); its architecture must be `model_cfg`'s."""
    if init not in EXTEND_INITS:
        raise XlingError(f"train.extend_init must be one of {', '.join(EXTEND_INITS)}, not {init!r}")
    base_model, base_tok = load_run(base)
    tok = load_tokenizer(tokenizer_dir)
    model = extend_model(base_model, base_tok, tok, init="mean" if init == "lsi" else init, seed=seed)
    mine, theirs = vars(model_cfg), vars(model.cfg)
    differ = [f"{k}={theirs[k]} (this run: {mine[k]})" for k in mine if mine[k] != theirs[k]]
    if differ:
        raise XlingError(f"train.init_from: the model of {base} differs from this run's [model]: {'; '.join(differ)}; "
                         f"use the base run's [model] section")
    if init == "lsi" and tok.get_vocab_size() > base_tok.get_vocab_size():
        lsi_rows(model, shards, list(range(base_tok.get_vocab_size(), tok.get_vocab_size())), langs=langs, seed=seed)
    return model.train()


@torch.no_grad()
def lsi_rows(model: Transformer, shards, new_ids: list[int], *, langs: list[str] | None = None,
             seed: int = 0) -> dict:
    """Start the input embeddings' rows of `new_ids` from cross-language LSI (`xling.embed_init.aligned_lsi` over
    the shards' aligned training text, new language included), mapped into the trained model's embedding space: a
    scaled orthogonal Procrustes map from the LSI vectors of the old tokens to their trained rows, applied to the
    new tokens the aligned text covers (the others keep their rows; an untied output layer keeps the old rows' mean,
    see the module docstring). A new Italian piece lands beside the trained pieces that share its verses in any
    language. Returns {tokens mapped, old tokens fitted}."""
    from xling.embed_init import aligned_lsi
    from xling.langs import pivot_lang

    langs = list(langs or shards.langs)
    vecs, _ = aligned_lsi(shards, model.cfg.vocab_size, model.cfg.d_model, pivot=pivot_lang(langs), langs=langs,
                          seed=seed)
    seen = np.abs(vecs).sum(1) > 0  # (V,)
    new = np.zeros(len(seen), bool)
    new[new_ids] = True
    old = seen & ~new
    old[new_ids[0]:] = False  # spare rows past the old tokenizer were never trained
    weight = model.wte.weight
    fit = procrustes(vecs[old], weight[torch.from_numpy(old)].double().numpy())
    weight[torch.from_numpy(seen & new)] = torch.from_numpy(fit(vecs[seen & new])).to(weight.dtype)
    return {"mapped": int((seen & new).sum()), "fitted": int(old.sum())}


def procrustes(x: np.ndarray, y: np.ndarray):
    """The scaled orthogonal map that best takes rows x (n, D) to rows y (n, D) after centring both (Schoenemann:
    W = U V^T from the SVD of x_c^T y_c, scale = sum of its singular values / |x_c|^2); returns it as a function of
    new rows (m, D) -> (m, D)."""
    x = x.astype(np.float64)
    x_mean, y_mean = x.mean(0), y.mean(0)
    u, sv, vt = np.linalg.svd((x - x_mean).T @ (y - y_mean))
    w, scale = u @ vt, sv.sum() / ((x - x_mean) ** 2).sum()
    return lambda rows: (rows.astype(np.float64) - x_mean) @ w * scale + y_mean

def format_extension(ext: dict) -> str:
    """The extension's before/after table of the added languages (fertility: tokens per word; parity: tokens per
    aligned pivot-language token)."""
    rows = [[lg, _num(v["fertility"]["before"]), _num(v["fertility"]["after"]), _num(v["parity"]["before"]),
             _num(v["parity"]["after"])] for lg, v in ext["langs"].items()]
    return format_table(["language", "fertility before", "after", "parity before", "after"], rows,
                        title=f"tokenizer: extended {ext['base']} ({ext['base_vocab_size']:,} ids kept) with "
                              f"{', '.join(ext['added'])} in {ext['seconds']:.1f} s")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
