"""The translation fine-tune: the pretrained model trained on translation pairs within a time or step budget.

    model, summary = finetune(model, shards, TranslateConfig(max_minutes=1), out_dir="runs/demo/translate")
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xling.batches import IGNORE
from xling.errors import XlingError
from xling.progress import progress
from xling.tasks.translate.config import TranslateConfig
from xling.tasks.translate.data import corpus_examples, make_batch
from xling.tasks.translate.loss import loss_fn


def _lr(cfg: TranslateConfig, step: int, frac: float) -> float:
    """The pretraining schedule (`trainer.warmup_cosine`), or its warmup then a constant lr."""
    from xling.train_config import warmup_cosine

    return warmup_cosine(step, 0.0 if cfg.schedule == "constant" else frac, lr=cfg.lr,
                         min_lr=cfg.lr if cfg.schedule == "constant" else cfg.min_lr, warmup_steps=cfg.warmup_steps)


POOL = 16  # length batching: a batch is a window of POOL x batch_size examples sorted by length


def finetune(model: nn.Module, data, cfg: TranslateConfig, *, out_dir: str | Path | None = None,
             tokenizer_sha256: str = "", cache_key: str = "", desc: str = "translate") -> tuple[nn.Module, dict]:
    """Fine-tune `model` in place for translation; (model in eval mode, summary).

    data: a `Shards` (its train pairs in cfg.directions) or a list of `Example`s. The budget is
    cfg.max_minutes and/or cfg.max_steps (whichever ends first). With `out_dir` the weights are saved
    there as an xling checkpoint (`xling translate --run out_dir` loads it).
    """
    from xling.precision import autocast_dtype, training_autocast
    from xling.train_config import adamw

    if not cfg.max_minutes and not cfg.max_steps:
        raise XlingError("set a fine-tune budget: translate.max_minutes or translate.max_steps")
    max_len = min(cfg.max_len, model.cfg.block_size)
    skipped = 0
    examples = data if isinstance(data, list) else None
    if examples is None:
        examples, skipped = corpus_examples(data, cfg.pairs(), "train", max_len)
    examples = [e for e in examples if len(e) <= max_len]
    if not examples:
        raise XlingError(f"no translation pairs of at most {max_len} tokens to fine-tune on; give aligned data "
                         f"or raise translate.max_len")
    dev = next(model.parameters()).device
    amp = autocast_dtype(cfg.precision, dev, width=model.cfg.d_model)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    lengths = np.array([len(e) for e in examples])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = adamw(params, dev, weight_decay=cfg.weight_decay, lr=cfg.lr, betas=(0.9, 0.98))
    model.train()
    B, N = cfg.batch_size, len(examples)
    step_loss = loss_fn(cfg, dev)
    losses, step, tokens, t0 = [], 0, 0, time.perf_counter()
    bar = progress(total=cfg.max_steps or None, desc=desc, unit="step")

    def frac() -> float:
        parts = [step / cfg.max_steps] if cfg.max_steps else []
        if cfg.max_minutes:
            parts.append((time.perf_counter() - t0) / (60 * cfg.max_minutes))
        return max(parts)

    while (f := frac()) < 1.0:
        # length batching: draw POOL x a batch (distinct if the data is smaller), sort by length, take one window.
        # Padded to a multiple of 8, en<->fr batches of 32 are 91% real tokens (80% with 4x and multiples of 16)
        pool = rng.permutation(N)[:POOL * B] if N <= POOL * B else rng.integers(0, N, size=POOL * B)
        pool = pool[np.argsort(lengths[pool], kind="stable")]
        start = int(rng.integers(0, len(pool) - min(B, len(pool)) + 1))
        batch = {k: v.to(dev) for k, v in make_batch([examples[i] for i in pool[start:start + B]], pad_multiple=8,
                                                    max_len=model.cfg.block_size).items()}
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step, f)
        with training_autocast(dev.type, amp):
            loss = step_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        tokens += int((batch["targets"] != IGNORE).sum())
        losses.append(loss.item())
        bar.update(1)
        if step % 5 == 0:
            f = max(frac(), 1e-9)
            eta = (time.perf_counter() - t0) * (1 - f) / f
            bar.set_postfix_str(f"loss {np.mean(losses[-5:]):.3f} eta {eta:.0f}s", refresh=False)
    bar.close()
    seconds = time.perf_counter() - t0
    model.eval()
    k = max(1, min(10, len(losses) // 4))
    summary = {"steps": step, "minutes": seconds / 60, "examples": N, "skipped_too_long": skipped,
               "target_tokens": tokens, "tokens_per_s": tokens / max(seconds, 1e-9),
               "loss_first": float(np.mean(losses[:k])), "loss_last": float(np.mean(losses[-k:])),
               "directions": list(cfg.directions)}
    if out_dir is not None:
        from xling.checkpoint import save_checkpoint

        save_checkpoint(out_dir, step, model_state=model.state_dict(), tokenizer_sha256=tokenizer_sha256, keep=1,
                        config={"model": asdict(model.cfg), "translate": asdict(cfg), "cache_key": cache_key,
                                "summary": summary})
    return model, summary
