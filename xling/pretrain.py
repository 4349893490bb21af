"""The pretrain stage: build the model, objectives and trainer from a config and train on a run's shards.

    xling pretrain --run runs/demo                        # CLI (xling/stages.py calls `pretrain`)
    summary = pretrain(cfg, Path("runs/demo"), resume=True)

The loop itself is `xling.trainer.Trainer`; this module checks that the config fits the shards (vocabulary,
languages, context), chooses the language subset, handles resume/overwrite of earlier checkpoints and
starts/stops torch.distributed when run under torchrun. With the `distill` objective it also gets the teacher's
vectors of the English segments before the first step (`xling.teacher`: read from `<run>/teacher/`, or encoded
once per corpus by rank 0 while the other ranks wait at a barrier).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from xling import distributed as xdist
from xling.checkpoint import list_checkpoints, remove_orphans
from xling.errors import XlingError
from xling.langs import pivot_lang
from xling.trainer import Trainer


class LangSubset:
    """A Shards view that hides languages outside `langs` (no segments, no pairs); indices stay unchanged."""

    def __init__(self, shards, langs: list[str]):
        self._shards, self._keep = shards, set(langs)

    def __getattr__(self, name: str):
        return getattr(self._shards, name)

    def num_segments(self, split: str, lang: str) -> int:
        return self._shards.num_segments(split, lang) if lang in self._keep else 0

    def pairs(self, split: str, a: str, b: str):
        if a not in self._keep or b not in self._keep:
            raise XlingError(f"language pair {a}-{b} is outside train.langs")
        return self._shards.pairs(split, a, b)

    def pair_counts(self, split: str) -> dict[str, int]:
        return {p: n for p, n in self._shards.pair_counts(split).items() if set(p.split("-", 1)) <= self._keep}


def resolve_model_config(model_cfg, shards, seq_len: int):
    """The model config for these shards: checks vocab (at least the tokenizer's ids), languages, length."""
    vocab = model_cfg.vocab_size or shards.vocab_size
    if vocab < shards.vocab_size:
        raise XlingError(f"model.vocab_size={vocab} is smaller than the tokenizer's {shards.vocab_size} ids; "
                         f"set model.vocab_size={shards.vocab_size} (the smallest that fits) or more")
    if 0 < model_cfg.n_langs < len(shards.langs):
        raise XlingError(f"model.n_langs={model_cfg.n_langs} but the shards have {len(shards.langs)} languages "
                         f"({', '.join(shards.langs)}); set model.n_langs={len(shards.langs)} or 0 (no language "
                         f"embeddings)")
    if seq_len > model_cfg.block_size:
        raise XlingError(f"train.seq_len={seq_len} is longer than model.block_size={model_cfg.block_size}; "
                         f"lower train.seq_len or raise model.block_size")
    return dataclasses.replace(model_cfg, vocab_size=vocab) if vocab != model_cfg.vocab_size else model_cfg


def training_bytes(model_cfg, batch_size: int, seq_len: int) -> tuple[int, int]:
    """(bytes of fp32 weights + gradients + AdamW's two moments, bytes of activations of one micro-batch), estimated
    from the config alone, before anything is allocated. Activations follow Korthikanti et al. (2022): per layer
    about T*B*(34*d + 5*heads*T) bytes at 16 bits, doubled for fp32, plus the logits and their gradient."""
    d, L, V, h = model_cfg.d_model, model_cfg.n_layer, model_cfg.vocab_size, model_cfg.n_head
    params = V * d * (1 if model_cfg.tie_embeddings else 2) + L * (4 * d * d + 3 * d * model_cfg.ff_dim)
    tokens = batch_size * seq_len
    acts = 2 * L * tokens * (34 * d + 5 * h * seq_len) + 3 * 4 * tokens * V
    return 16 * params, acts


def check_memory(model_cfg, tc) -> None:
    """One clear error, before any allocation, for a model or batch that cannot fit this machine's memory (a
    100-million-layer model or batch used to sit allocating for minutes). CPU only: a GPU reports its own."""
    import os

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no check
        return
    batch = max([tc.batch_size, *tc.batch_sizes.values()])
    state, acts = training_bytes(model_cfg, batch, tc.seq_len)
    if state + acts > 0.9 * total:
        raise XlingError(f"this model and batch need about {(state + acts) / 2**30:,.1f} GiB ({state / 2**30:,.1f} "
                         f"for weights, gradients and AdamW; {acts / 2**30:,.1f} for one batch of {batch} x "
                         f"{tc.seq_len} tokens), more than this machine's {total / 2**30:.0f} GiB; lower model.n_layer "
                         f"/ model.d_model or train.batch_size (train.grad_accum keeps the global batch)")


def check_langs(langs: list[str], shards) -> list[str]:
    unknown = [lg for lg in langs if lg not in shards.langs]
    if unknown:
        raise XlingError(f"train.langs has {', '.join(unknown)}, which the shards do not have "
                         f"({', '.join(shards.langs)}); remove it or rebuild the corpus with it")
    return list(langs) or list(shards.langs)


def pretrain(cfg, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
             teacher=None, on_fresh_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train the model of `cfg.model` on `<run_dir>/shards` with `cfg.train`; returns the summary.

    Writes `<run_dir>/checkpoints/` and `<run_dir>/train/metrics.jsonl`. resume: continue from the latest
    checkpoint (exactly, for the same config and process layout). overwrite: delete earlier checkpoints
    and metrics first, once every check has passed. on_fresh_start: called (rank 0) at that point when the run
    starts anew, e.g. to drop the manifest's record of the old checkpoints. Under torchrun every process calls
    this; rank 0 writes. teacher: the distill objective's `xling.teacher.Teacher` instead of the one
    `train.teacher` names; its vectors are cached in `<run_dir>/teacher/` (computed before the first step, once
    per corpus).
    """
    from xling.model import Transformer
    from xling.objectives import build_objectives, resolve_pairs
    from xling.shards import Shards

    run_dir = Path(run_dir)
    tc = cfg.train
    seed = tc.seed if tc.seed is not None else cfg.run.seed
    started = not torch.distributed.is_initialized()
    info = xdist.init_distributed(tc.device)
    try:
        tok_hash = None
        tok_json = run_dir / "tokenizer" / "tokenizer.json"
        if tok_json.is_file():
            from xling.tokenizer import tokenizer_hash

            tok_hash = tokenizer_hash(run_dir / "tokenizer")
        shards = Shards(run_dir / "shards", expect_tokenizer_hash=tok_hash)
        langs = check_langs(tc.langs, shards)
        view = LangSubset(shards, langs) if set(langs) != set(shards.langs) else shards
        model_cfg = resolve_model_config(cfg.model, shards, tc.seq_len)
        if info.device.type == "cpu":
            check_memory(model_cfg, tc)
        if tc.pairs:  # a bad pair is an error before --overwrite deletes anything
            resolve_pairs(tc.pairs, view)
        distill = tc.objectives.get("distill", 0) > 0
        if distill:  # so are a corpus without English pairs and a teacher that cannot load
            from xling.teacher import distill_ids, distill_targets, langs_without_pivot_pairs, resolve_teacher

            teacher_ids = distill_ids(view, tc.distill_max_segments)
            teacher = teacher or resolve_teacher(tc.teacher)
        ckpt_root = run_dir / "checkpoints"
        if not resume and list_checkpoints(ckpt_root) and not overwrite:
            raise XlingError(f"{ckpt_root} already holds checkpoints; pass --resume to continue or "
                             f"--overwrite to start over")
        if resume and not list_checkpoints(ckpt_root):
            raise XlingError(f"nothing to resume: {ckpt_root} holds no checkpoint; run without --resume")
        targets = None
        if distill:  # rank 0 encodes (once per corpus) and writes the cache; the other ranks then read it
            if info.is_main:
                for lg in langs_without_pivot_pairs(view):
                    print(f"pretrain: {lg} has no English translation pairs: it learns nothing from distill",
                          file=sys.stderr)
                targets = distill_targets(run_dir, teacher, teacher_ids)
            xdist.barrier()
            if not info.is_main:
                targets = distill_targets(run_dir, teacher, teacher_ids)
        corpus = getattr(cfg, "corpus", None)
        alpha = tc.alpha if tc.alpha is not None else getattr(corpus, "alpha", 0.3)
        pair_alpha = tc.pair_alpha if tc.pair_alpha is not None else getattr(corpus, "pair_alpha", 0.3)
        xdist.seed_everything(seed)
        if tc.init_from and not resume:  # continued pretraining: the base run's model, its vocabulary extended
            from xling.extend import start_from_run

            model = start_from_run(tc.init_from, model_cfg, run_dir / "tokenizer", init=tc.extend_init, seed=seed,
                                   shards=view, langs=langs)
            if info.is_main:
                print(f"pretrain: starting from {tc.init_from}'s model ({model_cfg.vocab_size:,} ids; new rows: "
                      f"{tc.extend_init})", file=sys.stderr)
        else:
            model = Transformer(model_cfg)
        if tc.embed_init == "lsi" and not resume and not tc.init_from:
            from xling.embed_init import init_embeddings

            if info.is_main:
                print("pretrain: token embeddings from cross-language LSI of the aligned training text "
                      "(a truncated SVD, ~15 s for the demo corpus) ...", file=sys.stderr)
            stats = init_embeddings(model, view, langs, pivot=pivot_lang(langs), seed=seed)
            if info.is_main:
                print(f"pretrain: LSI embeddings done ({stats['tokens_covered']:,} tokens, "
                      f"{stats['concepts']:,} translation groups, {len(stats['languages'])} languages, "
                      f"{stats['seconds']:.0f} s)", file=sys.stderr)
        objectives = build_objectives(tc.objectives, view, alpha=alpha, pair_alpha=pair_alpha, mlm_prob=tc.mlm_prob,
                                      mlm_smoothing=tc.mlm_smoothing, tau=tc.tau, margin=tc.margin,
                                      d_model=model_cfg.d_model, length_batching=tc.length_batching,
                                      pad_multiple=tc.pad_multiple, pairs=tc.pairs, mixed_langs=tc.mixed_langs,
                                      lang_shares=tc.lang_shares, teacher=targets)
        # every check passed: only now is anything of an earlier run deleted
        if info.is_main:
            if not resume:
                shutil.rmtree(ckpt_root, ignore_errors=True)
                shutil.rmtree(run_dir / "train", ignore_errors=True)
                if on_fresh_start is not None:
                    on_fresh_start()
            removed = remove_orphans(ckpt_root)  # what a killed checkpoint write left (the run is locked: ours)
            if removed:
                print(f"pretrain: removed {len(removed)} unfinished checkpoint write(s): {', '.join(removed)}",
                      file=sys.stderr)
        xdist.barrier()
        config = {"model": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(tc),
                  "run": cfg.to_dict() if hasattr(cfg, "to_dict") else {}}
        trainer = Trainer(model, objectives, view, tc, run_dir=run_dir, seed=seed, info=info,
                          tokenizer_sha256=shards.tokenizer_sha256, config=config, langs=langs)
        step = trainer.load(ckpt_root) if resume else 0  # a bad checkpoint is the only line on stderr
        if info.is_main:
            amp = "bf16 autocast" if trainer.amp_dtype else "fp32"
            print(f"pretrain: {model.num_params():,} parameters, objectives "
                  f"{', '.join(f'{n} {w:.2f}' for n, w in zip(trainer.names, trainer.probs, strict=True))}, "
                  f"{info.world_size} process(es) on {info.device}, {amp}"
                  f"{', compiled' if trainer.compiles else ''}", file=sys.stderr)
            if resume:
                print(f"pretrain: resumed from step {step}", file=sys.stderr)
        return trainer.train()
    finally:
        if started:
            xdist.destroy()
