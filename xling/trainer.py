"""The pretraining loop: a weighted mixture of objectives, AdamW, warmup + cosine, bf16, checkpoints.

    xling pretrain --run runs/demo                       # CLI: reads shards/, writes checkpoints/, train/
    torchrun --nproc-per-node 2 -m xling pretrain --run runs/demo      # data parallel (DDP or FSDP2)
    summary = pretrain(cfg, Path("runs/demo"), resume=True)            # Python (xling.pretrain), the same
    trainer = Trainer(model, objectives, shards, TrainConfig(max_steps=50)); trainer.train()

One optimizer step: draw an objective by its weight (one generator shared by all ranks, so every rank
runs the same objective); each of the step's micro-batches is one "slot" with its own numpy generator
(the objective draws the language or pair by alpha and the data from it) and its own torch RNG state
(dropout). Slot s of N = world_size * grad_accum slots is micro-batch s % grad_accum on rank
s // grad_accum, and its generators derive from (seed, s) only: 2 processes with grad_accum 1 see
exactly the batches that 1 process with grad_accum 2 sees, and every generator's state is saved in the
checkpoint, so a resumed run continues the same data order bit for bit.

Schedule: linear warmup over `warmup_steps`, then cosine from `lr` to `min_lr` over the budget. The
cosine's progress is the fraction of the budget used, max(step/max_steps, tokens/max_tokens,
elapsed/max_minutes) over the budgets set, so a wall-clock budget gets a time-based cosine (the lr
reaches min_lr when time runs out, whatever the step rate) and a step budget an exact, step-based one
(what an exact resume needs). Time includes validation and checkpointing; in a distributed run the
ranks' mean clock is used, so every rank sees the same lr and stops at the same step.

Precision "auto": bf16 autocast (fp32 master weights and AdamW state) on CUDA with bf16 and on CPUs with
native bf16 dot products (AVX512-BF16 or AMX); fp32 elsewhere. `compile` compiles each objective's
forward (model and loss together, static shapes: the pair objectives pad to multiples of
`pad_multiple`, so each meets a few lengths, one graph each); validation always runs eagerly.
The (B*T, V) logits and the cross-entropy dominate once matmuls are bf16, so the objective (model + loss) is
the compiled unit: compiled bf16 runs 1.6x the eager bf16 step (bench/train_throughput.py). bf16 converges as
fp32 does (the throughput and convergence figures are in docs/measurements.md).

The config, schedule and optimizer are `xling.train_config`; saving and resuming, `xling.resume`.

A step whose global gradient norm is NaN or inf is skipped (no update, gradients dropped) and reported
on stderr and in metrics.jsonl. Metrics: `<run>/train/metrics.jsonl`, one JSON line per log step
("kind": "train": loss per objective and per objective/language, lr, grad norm, tokens/s) and per
validation ("kind": "valid": loss per objective and language or pair, bits per character per language).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from xling import distributed as xdist
from xling.allocator import keep_freed_memory
from xling.errors import XlingError
from xling.langs import pivot_lang
from xling.precision import autocast_dtype
from xling.resume import Resumable
from xling.train_config import TrainConfig, adamw, compiles, warmup_cosine

_OBJ, _EVAL = 1, 4  # sub-stream ids of the seed (SeedSequence); 2 and 3 are RngSlot's


def use_compile_cache() -> None:
    """Keep compiled graphs across runs: inductor's caches under the xling cache folder (not a /tmp that a reboot
    empties), unless the user's TORCHINDUCTOR_CACHE_DIR says where. A second run of the same model and shapes loads
    its graphs instead of compiling them again. Importing torch._dynamo already writes inductor's default into the
    variable, so that value counts as unset; the caches read the variable at every use."""
    from xling.files import cache_dir

    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
        default = os.path.abspath(default_cache_dir())
    except ImportError:  # another torch layout: only an unset variable is ours to set
        default = None
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, default):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir() / "inductor")


def compiled_call(batch: dict, variable_length: bool, math_sdpa: bool) -> contextlib.AbstractContextManager:
    """Prepare a call of a compiled (model + loss) graph on `batch`: its tensors' shapes are marked static, except
    dim 1 (B, T) when `variable_length` (T symbolic: one graph serves every padded length); the returned context
    runs attention on SDPA's math backend when `math_sdpa` (on a CPU, so inductor fuses the softmax: the CPU flash
    kernel's backward took ~19% of a step, bench/train_throughput.py: 1.16x faster without it)."""
    for v in batch.values():
        if torch.is_tensor(v):
            for dim in range(v.dim()):
                if dim == 1 and variable_length:
                    torch._dynamo.maybe_mark_dynamic(v, 1)
                else:
                    torch._dynamo.mark_static(v, dim)
    return sdpa_kernel(SDPBackend.MATH) if math_sdpa else contextlib.nullcontext()


class TrainModule(nn.Module):
    """The model and the objectives (with their heads) as one module: DDP/FSDP see every trained weight."""

    def __init__(self, model: nn.Module, objectives: dict[str, nn.Module]):
        super().__init__()
        self.model = model
        self.objectives = nn.ModuleDict(objectives)
        self.compiled: dict[str, nn.Module] = {}  # objective name -> its compiled forward (train.compile)
        self.math_sdpa = False  # compiled on CPU: SDPA's math backend inside the graphs (see forward)

    def compile(self, backend: str | Callable = "inductor") -> None:
        """Compile each objective's forward, model and loss together (most of the gain is in the loss).

        Shapes are static, except the sequence length of objectives whose batches are padded to their
        longest row (contrastive, TLM, NSP): one graph with a symbolic length serves every length. On a cold
        cache each graph costs 30-100 s of CPU compilation; one per length (32/64/96/128) ate ~3.5 of the
        demo's 10 minutes, while the symbolic graph compiles once at equal step times (docs/measurements.md).
        Python ints in the batch (token counts) start static and turn
        symbolic on their first change, so they cost one recompile, not one per value.
        """
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        self.math_sdpa = next(self.model.parameters()).device.type == "cpu"
        # the objectives' `.item()` for their stats ends each graph: expected, so not worth a warning
        logging.getLogger("torch._dynamo.variables.tensor").setLevel(logging.ERROR)
        # plain attributes, not registered submodules: the weights are the objectives', counted once
        use_compile_cache()
        object.__setattr__(self, "compiled", {k: torch.compile(v, backend=backend)
                                             for k, v in self.objectives.items()})

    def forward(self, name: str, batch: dict, eager: bool = False) -> tuple[torch.Tensor, dict]:
        # eager=True for validation: its other shapes and modes would each cost a recompile
        if eager or name not in self.compiled:
            return self.objectives[name](self.model, batch)
        try:
            with compiled_call(batch, self.objectives[name].variable_length, math_sdpa=self.math_sdpa):
                return self.compiled[name](self.model, batch)
        except torch._dynamo.exc.BackendCompilerFailed as e:  # e.g. no C++ compiler: train on, eagerly
            print(f"xling pretrain: torch.compile failed ({str(e).splitlines()[0][:200]}); continuing without "
                  f"it (set train.compile=false to skip the attempt)", file=sys.stderr)
            object.__setattr__(self, "compiled", {})
            return self.objectives[name](self.model, batch)


class Trainer(Resumable):
    """The loop over a built model, objectives and shards (`pretrain` builds them from a config).

    run_dir: where `checkpoints/` and `train/metrics.jsonl` go (None: nothing is written).
    info: this process's place in a torchrun job (default: a single process on the CPU).
    config: what config.json in each checkpoint holds ({"model": ..., "train": ..., ...}).
    """

    def __init__(self, model: nn.Module, objectives: dict[str, nn.Module], shards, cfg: TrainConfig, *,
                 run_dir: str | Path | None = None, seed: int = 0, info: xdist.DistInfo | None = None,
                 tokenizer_sha256: str = "", config: dict | None = None, langs: list[str] | None = None):
        self.cfg, self.shards, self.seed = cfg, shards, seed
        self.info = info or xdist.DistInfo()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.tokenizer_sha256 = tokenizer_sha256
        self.config = config or {"train": dataclasses.asdict(cfg)}
        self.langs = list(langs or shards.langs)
        self.names = [k for k in cfg.objectives if k in objectives and cfg.objectives[k] > 0]
        if not self.names:
            raise XlingError("no objective with a positive weight in train.objectives was built")
        w = np.array([cfg.objectives[k] for k in self.names], dtype=np.float64)
        self.probs = w / w.sum()

        dev = self.info.device
        keep_freed_memory()  # every step frees and allocates the same large tensors (xling.allocator)
        self.model = model.to(dev)
        self.module = TrainModule(self.model, objectives).to(dev)
        # DDP must look for unused parameters when a step can leave an objective's head without gradient
        heads = any(True for n in self.names for _ in objectives[n].parameters())
        self.wrapped = xdist.wrap(self.module, cfg.dist, self.info, blocks=list(getattr(model, "blocks", [])),
                                  find_unused=heads and len(self.names) > 1)
        self.compiles = compiles(cfg)  # train.compile, "auto" decided by the budget
        if self.compiles:
            self.module.compile()
        self.optimizer = self._make_optimizer()
        self.slow_head = self._slow_head()
        self.amp_dtype = autocast_dtype(cfg.precision, dev, width=model.cfg.d_model)

        self.obj_rng = np.random.default_rng([seed, _OBJ])
        n_slots = self.info.world_size * cfg.grad_accum
        first = self.info.rank * cfg.grad_accum
        self.slots = [xdist.RngSlot(seed, first + i, dev) for i in range(cfg.grad_accum)]
        self.n_slots = n_slots
        self.step_no, self.tokens, self.elapsed, self.skipped = 0, 0, 0.0, 0
        self.warmup_frac: float | None = None
        self._interval: dict[str, list[float]] = {}
        self._interval_tokens, self._interval_time = 0, 0.0
        self.last_losses: dict[str, float] = {}
        self.last_valid: dict[str, float] = {}
        self._last_saved = -1
        self._carry = 0.0  # seconds spent outside step() (validation, checkpoints), charged to the next step
        self._signal = 0  # set by the SIGINT/SIGTERM handler during train(); acted on between steps
        self.stop_signal = 0  # the signal all ranks agreed to stop on (after the step's all-reduce)
        self._tb = None

    # ------------------------------------------------------------------ setup

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        scales = []
        if cfg.embed_lr_scale != 1.0:
            scales.append(([self.model.wte.weight], cfg.embed_lr_scale))
        if cfg.head_lr_scale != 1.0 and getattr(self.model, "lm_out", None) is not None:
            scales.append(([self.model.lm_out.weight], cfg.head_lr_scale))
        return adamw([p for p in self.module.parameters() if p.requires_grad], self.info.device,
                     weight_decay=cfg.weight_decay, lr_scales=scales, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)

    def _slow_head(self) -> torch.Tensor | None:
        """The output layer whose rows of the base model's ids (train.old_vocab) learn at
        train.old_vocab_head_lr_scale of its lr (`_step_optimizer`): an untied one only (tied, it is the input
        embeddings too), or None."""
        cfg, head = self.cfg, getattr(self.model, "lm_out", None)
        if cfg.old_vocab_head_lr_scale == 1.0 or not cfg.old_vocab or head is None:
            return None
        if xdist.is_fsdp(self.wrapped) and self.info.distributed:
            raise XlingError("train.old_vocab_head_lr_scale needs the whole output layer on each process: use "
                             "train.dist=\"ddp\" (or old_vocab_head_lr_scale=1) with FSDP")
        return head.weight

    def _step_optimizer(self) -> None:
        """optimizer.step(), the old vocabulary's output rows moved old_vocab_head_lr_scale of the way: AdamW's
        update (decoupled decay included) is linear in the lr, so this is those rows at that share of the lr."""
        if self.slow_head is None:
            self.optimizer.step()
            return
        rows = self.slow_head.detach()[:self.cfg.old_vocab]  # (old_vocab, d), a view
        before = rows.clone()
        self.optimizer.step()
        rows.copy_(before.lerp_(rows, self.cfg.old_vocab_head_lr_scale))

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.info.device.type, dtype=self.amp_dtype)

    def _no_sync(self, last: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        if last or not self.info.distributed:
            return contextlib.nullcontext()
        if isinstance(self.wrapped, nn.parallel.DistributedDataParallel):
            return self.wrapped.no_sync()
        return contextlib.nullcontext()  # FSDP: set_requires_gradient_sync below

    # ------------------------------------------------------------------ schedule and budget

    def progress(self) -> float:
        """Fraction of the budget used: the largest over the budgets set (1 = done)."""
        cfg, parts = self.cfg, []
        if cfg.max_steps:
            parts.append(self.step_no / cfg.max_steps)
        if cfg.max_tokens:
            parts.append(self.tokens / cfg.max_tokens)
        if cfg.max_minutes:
            parts.append(self.elapsed / (60 * cfg.max_minutes))
        return max(parts)

    def done(self) -> bool:
        return self.progress() >= 1.0

    def lr(self) -> float:
        """The lr of the coming step: linear warmup, then cosine over the rest of the budget."""
        cfg = self.cfg
        q = 0.0
        if self.step_no >= cfg.warmup_steps:
            if self.warmup_frac is None:
                self.warmup_frac = self.progress()  # where the cosine starts, saved for resume
            w = self.warmup_frac
            q = 1.0 if w >= 1 else (self.progress() - w) / (1 - w)
        return warmup_cosine(self.step_no, q, lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps)

    # ------------------------------------------------------------------ one step

    def step(self) -> dict[str, Any]:
        """One optimizer step over all micro-batches (and ranks). Returns its global loss, lr, grad norm."""
        t0 = time.perf_counter()
        cfg = self.cfg
        lr = self.lr()
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        name = self.names[int(self.obj_rng.choice(len(self.names), p=self.probs))]
        objective = self.module.objectives[name]
        fsdp = xdist.is_fsdp(self.wrapped) and self.info.distributed
        loss_sum, tokens = 0.0, 0
        for i, slot in enumerate(self.slots):
            last = i == len(self.slots) - 1
            batch = objective.make_batch(self.shards, "train", slot.rng, cfg.batch_sizes.get(name, cfg.batch_size),
                                         cfg.seq_len)
            tokens += int(batch["n_tokens"])
            if fsdp:
                self.wrapped.set_requires_gradient_sync(last)
            with self._no_sync(last), slot.torch_rng():
                with self.autocast():
                    loss, stats = self.wrapped(name, batch)
                (loss / len(self.slots)).backward()
            loss_sum += float(stats["loss"])
            self._add_stats(name, batch.get("lang") or batch.get("pair"), stats)

        params = [p for p in self.module.parameters() if p.grad is not None]
        if cfg.clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip, foreach=True)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
        if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor
            norm = norm.full_tensor()
        grad_norm = float(norm)
        skipped = not math.isfinite(grad_norm)  # the same on every rank: gradients are already reduced
        if skipped:
            self.skipped += 1
            if self.info.is_main:
                print(f"xling pretrain: step {self.step_no + 1}: gradient norm is {grad_norm} (objective "
                      f"{name}); skipped this update", file=sys.stderr)
        else:
            self._step_optimizer()
        self.optimizer.zero_grad(set_to_none=True)

        # one all-reduce per step: tokens, wall time, loss; every rank gets the same totals
        totals = xdist.all_reduce_sum(torch.tensor([tokens, time.perf_counter() - t0 + self._carry,
                                                    loss_sum, len(self.slots), self._signal],
                                                   dtype=torch.float64))
        self.stop_signal = int(totals[4])  # any rank's SIGINT/SIGTERM: every rank stops after this same step
        self._carry = 0.0
        self.step_no += 1
        self.tokens += int(totals[0])
        dt = float(totals[1]) / self.info.world_size
        self.elapsed += dt
        self._interval_tokens += int(totals[0])
        self._interval_time += dt
        loss = float(totals[2] / totals[3])
        if skipped:
            self._interval.setdefault("skipped", [0.0, 1])[0] += 1
        else:  # the same value on every rank; the merge divides by the count, so the mean is right
            acc = self._interval.setdefault("grad_norm", [0.0, 0])
            acc[0] += grad_norm
            acc[1] += 1
        return {"step": self.step_no, "objective": name, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                "tokens": int(totals[0]), "skipped": skipped}

    def _add_stats(self, name: str, unit: str | None, stats: dict) -> None:
        if "row_loss" in stats and unit is None:  # a batch of several languages: each row counts for its own
            rows, langs = stats["row_loss"].float().cpu().numpy(), stats["row_lang"].cpu().numpy()
            for i in np.unique(langs):
                acc = self._interval.setdefault(f"loss/{name}/{self.shards.langs[int(i)]}", [0.0, 0])
                acc[0] += float(rows[langs == i].mean())
                acc[1] += 1
        for key, value in stats.items():
            skip = key in ("n_tokens", "n_masked", "row_loss", "row_lang")
            if skip or not isinstance(value, int | float | torch.Tensor):
                continue
            value = float(value)  # a 0-dim tensor too (one sync here rather than in the objective)
            for k in (f"{key}/{name}",) + ((f"{key}/{name}/{unit}",) if unit else ()):
                acc = self._interval.setdefault(k, [0.0, 0])
                acc[0] += value
                acc[1] += 1

    # ------------------------------------------------------------------ validation

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss per objective and per language (or pair: the pivot's pairs when it has any); bits
        per character per language.

        Each batch comes from a fresh generator (seed, unit), so every validation scores the same text.
        Every rank computes the same numbers (FSDP needs every rank in each forward).
        """
        from xling.heldout import bits_per_char, clm_eval

        cfg, shards = self.cfg, self.shards
        out: dict[str, float] = {}
        self.module.eval()
        fsdp = xdist.is_fsdp(self.wrapped) and self.info.distributed
        try:
            for name in self.names:
                objective = self.module.objectives[name]
                if getattr(objective, "uses_pairs", False):
                    names = [p for p, n in shards.pair_counts("valid").items() if n > 0]
                    units = [("pair", p) for p in objective.valid_pairs(shards, names, pivot_lang(self.langs))]
                else:
                    units = [("lang", lg) for lg in self.langs if shards.num_segments("valid", lg) >= 2]
                losses = []
                for u, (kind, unit) in enumerate(units):
                    rng = np.random.default_rng([self.seed, _EVAL, u])
                    vals = []
                    for _ in range(cfg.eval_batches):
                        batch = objective.make_batch(shards, "valid", rng, cfg.batch_sizes.get(name, cfg.batch_size),
                                                     cfg.seq_len, **{kind: unit})
                        with self.autocast():
                            _, stats = self.module(name, batch, eager=True)
                        vals.append(float(stats["loss"]))
                    if vals:
                        out[f"valid/loss/{name}/{unit}"] = float(np.mean(vals))
                        losses.extend(vals)
                if losses:
                    out[f"valid/loss/{name}"] = float(np.mean(losses))
            if fsdp:
                self.wrapped.unshard()  # clm_eval and encode call the model directly, not the sharded root
            if "clm" in self.names:
                for lang in self.langs:
                    if shards.num_segments("valid", lang) == 0:
                        continue
                    with self.autocast():
                        nats, chars = clm_eval(self.model, shards, "valid", lang, cfg.seq_len,
                                               cfg.eval_max_tokens, cfg.batch_size)
                    out[f"valid/bpc/{lang}"] = bits_per_char(nats, chars)
            if cfg.eval_retrieval:
                out.update(self._valid_retrieval())
            if fsdp:
                self.wrapped.reshard()
        finally:
            self.module.train()
        self.last_valid = out
        return out

    def _valid_retrieval(self) -> dict[str, float]:
        """Top-1 retrieval of the translation among `eval_retrieval` valid verse pairs, pivot (en) <-> each
        language, both directions averaged: the learning curve of the cross-lingual space (the demo's report).
        Every layer is pooled and the best on average is reported (`valid/retrieval_layer`), as the
        evaluation chooses its layer on the valid split."""
        from xling.encode import encode, top1_accuracy

        shards, n = self.shards, self.cfg.eval_retrieval
        pivot = pivot_lang(self.langs)
        acc: dict[str, np.ndarray] = {}  # lang -> (L+1,) accuracy per layer
        for lang in self.langs:
            if lang == pivot:
                continue
            try:
                pairs = np.asarray(shards.pairs("valid", pivot, lang))[:n]  # (M, 2): pivot row, lang row
            except XlingError:  # no translations of this pair
                continue
            if len(pairs) < 2:
                continue
            vecs = []
            for col, lg in ((0, pivot), (1, lang)):
                seqs = [np.asarray(shards.segment("valid", lg, int(i)), dtype=np.int64) for i in pairs[:, col]]
                with self.autocast():
                    vecs.append(encode(self.model, seqs, lang_index=shards.langs.index(lg), all_layers=True,
                                       tag=int(shards.lang_token_ids[lg]), specials=shards.specials, bar=False))
            acc[lang] = np.array([(top1_accuracy(a, b) + top1_accuracy(b, a)) / 2 for a, b in zip(*vecs, strict=True)])
        if not acc:
            return {}
        best = int(np.argmax(np.mean(list(acc.values()), axis=0)))
        out = {f"valid/retrieval/{pivot}-{lang}": float(a[best]) for lang, a in acc.items()}
        out["valid/retrieval"] = float(np.mean(list(out.values())))
        out["valid/retrieval_layer"] = best
        return out

    # ------------------------------------------------------------------ logging

    def _log_interval(self) -> dict[str, Any]:
        """Merge every rank's per-objective/language sums of the interval into means; log on rank 0."""
        merged: dict[str, list[float]] = {}
        for part in xdist.all_gather_objects(self._interval):
            for k, (s, n) in part.items():
                acc = merged.setdefault(k, [0.0, 0])
                acc[0] += s
                acc[1] += n
        self._interval = {}
        skipped = int(merged.pop("skipped", [0, 0])[0] / max(self.info.world_size, 1))
        means = {k: s / n for k, (s, n) in sorted(merged.items()) if n}
        self.last_losses.update({k.split("/", 1)[1]: v for k, v in means.items() if k.count("/") == 1
                                 and k.startswith("loss/")})  # each objective's latest logged loss
        total = sum(means.get(f"loss/{n}", 0.0) * merged.get(f"loss/{n}", [0, 0])[1] for n in self.names)
        count = sum(merged.get(f"loss/{n}", [0, 0])[1] for n in self.names)
        line = {"kind": "train", "step": self.step_no, "tokens": self.tokens, "elapsed_s": round(self.elapsed, 3),
                "lr": self.optimizer.param_groups[0]["lr"], "loss": total / max(count, 1),
                "tokens_per_s": self._interval_tokens / max(self._interval_time, 1e-9), "skipped": skipped,
                **means}
        self._interval_tokens, self._interval_time = 0, 0.0
        self._write(line)
        return line

    def _write(self, line: dict) -> None:
        if self.run_dir is None or not self.info.is_main:
            return
        path = self.run_dir / "train" / "metrics.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        if self.cfg.tensorboard:
            self._tensorboard(line)

    def _tensorboard(self, line: dict) -> None:
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print("xling pretrain: train.tensorboard is on but tensorboard is not installed "
                      "(pip install tensorboard); writing metrics.jsonl only", file=sys.stderr)
                self.cfg.tensorboard = False
                return
            self._tb = SummaryWriter(str(self.run_dir / "train" / "tb"))
        prefix = "" if line["kind"] == "valid" else "train/"
        for k, v in line.items():
            if k not in ("kind", "step") and isinstance(v, int | float):
                self._tb.add_scalar(prefix + k, v, line["step"])
        self._tb.flush()

    # ------------------------------------------------------------------ the loop

    def train(self, max_new_steps: int | None = None) -> dict[str, Any]:
        """Train until a budget is spent (or `max_new_steps` more steps); validate, checkpoint, log.

        Returns the summary: steps, tokens, tokens_per_second, minutes, skipped_steps, final losses per
        objective, validation losses and bits per character per language, and the last checkpoint.
        """
        from xling.progress import progress

        cfg = self.cfg
        start_step, start_tokens, start_time = self.step_no, self.tokens, self.elapsed
        bar = progress(total=cfg.max_steps or None, initial=self.step_no, desc="pretrain", unit="step") \
            if self.info.is_main else _NoBar()
        new = 0
        if self.step_no == 0 and cfg.eval_every:
            self._validate()  # where the learning curves start (the embeddings' initialisation shows here)
        handlers = self._catch_signals()
        try:
            while not self.done() and (max_new_steps is None or new < max_new_steps) and not self.stop_signal:
                out = self.step()
                new += 1
                bar.update(1)
                if self.step_no % cfg.log_every == 0 or self.done():
                    line = self._log_interval()
                    bar.set_postfix_str(f"loss {line['loss']:.3f} tok/s {line['tokens_per_s']:,.0f} "
                                        f"eta {_fmt_eta(self.eta())}", refresh=False)
                elif out["skipped"]:
                    self._write({"kind": "skip", "step": self.step_no, "objective": out["objective"],
                                 "grad_norm": out["grad_norm"]})
                if cfg.eval_every and self.step_no % cfg.eval_every == 0 and not self.done():
                    self._validate()
                if cfg.ckpt_every and self.step_no % cfg.ckpt_every == 0 and not self.done():
                    self.save()
        except KeyboardInterrupt:  # a second Ctrl-C, inside a step: its state may be half-applied, never saved
            if self.info.is_main:
                print(f"xling pretrain: interrupted inside a step; the last checkpoint is step {self._last_saved}",
                      file=sys.stderr)
            raise
        finally:
            bar.close()
            for sig, old in handlers.items():
                signal.signal(sig, old)
        if self.stop_signal:  # the first SIGINT/SIGTERM: stopped between two steps, so the state is whole
            if self.run_dir is not None and self.step_no > self._last_saved:
                self.save()
            if self.info.is_main:
                print(f"xling pretrain: stopped by {signal.Signals(self.stop_signal).name} after step "
                      f"{self.step_no}; saved it, resume with the same command", file=sys.stderr)
            if self.stop_signal == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + self.stop_signal)
        if self.done() and (self.step_no > start_step or not self.last_valid):
            self._validate()
        if self.step_no > self._last_saved:
            self.save()
        minutes = (self.elapsed - start_time) / 60
        return {"steps": self.step_no, "new_steps": self.step_no - start_step, "tokens": self.tokens,
                "tokens_per_second": (self.tokens - start_tokens) / max(self.elapsed - start_time, 1e-9),
                "minutes": round(minutes, 3), "skipped_steps": self.skipped, "final_loss": self.last_losses,
                "valid_loss": {k[len("valid/loss/"):]: v for k, v in self.last_valid.items()
                               if k.startswith("valid/loss/")},
                "valid_bpc": {k[len("valid/bpc/"):]: v for k, v in self.last_valid.items()
                              if k.startswith("valid/bpc/")},
                "checkpoint": str(self.run_dir / "checkpoints") if self.run_dir else None}

    def _catch_signals(self) -> dict:
        """SIGINT/SIGTERM during train() only set a flag: the loop stops at the next step boundary and saves that
        step (an interrupt inside optimizer.step() had saved matrices of one step with norms of the previous).
        A second Ctrl-C interrupts at once. Returns the previous handlers (none outside the main thread)."""
        def flag(sig, _frame):
            self._signal = sig
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)

        old = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, flag)
        except ValueError:  # not the main thread: signals cannot be caught here
            pass
        return old

    def _validate(self) -> dict[str, float]:
        t0 = time.perf_counter()
        out = self.evaluate()
        self._write({"kind": "valid", "step": self.step_no, "tokens": self.tokens,
                     "elapsed_s": round(self.elapsed + time.perf_counter() - t0, 3), **out})
        if self.info.is_main and out.get("valid/bpc/" + self.langs[0]) is not None:
            bpc = " ".join(f"{k[len('valid/bpc/'):]} {v:.3f}" for k, v in out.items() if "/bpc/" in k)
            print(f"xling pretrain: step {self.step_no}: valid bits/char {bpc}", file=sys.stderr)
        if self.info.is_main and "valid/retrieval" in out:
            print(f"xling pretrain: step {self.step_no}: valid retrieval top-1 (mean over languages, "
                  f"{self.cfg.eval_retrieval} pairs each) {out['valid/retrieval']:.3f}", file=sys.stderr)
        self._carry += time.perf_counter() - t0
        return out

    def eta(self) -> float:
        f = self.progress()
        return self.elapsed * (1 - f) / f if f > 0 else float("inf")


class _NoBar:
    """The progress bar of ranks other than 0: silent."""

    def update(self, n: int = 1) -> None: ...
    def set_postfix_str(self, s: str, refresh: bool = True) -> None: ...
    def close(self) -> None: ...


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"
