"""Translation fine-tune speed: xling's step against a Hugging Face fine-tune loop on the same weights.

    python bench/translate_finetune.py                  # 20 timed rounds after 3 warm-up rounds
    python bench/translate_finetune.py --rounds 40 --threads 1

The model: vocab 8000, context 128, 4 layers, d 256, 4 heads (the translation recipe's sizes), xling's default
family, random initialisation, no dropout; its weights are copied into transformers' LlamaForCausalLM (SDPA
attention), what `xling export` writes. The data: random token pairs `<src> x </s> <tgt> y </s>` with the
length spread of Bible verses in en<->fr (source and target 8-60 tokens), batches of 32 drawn and
length-batched as `tasks.translate.finetune.finetune` does (a window of a 16x pool sorted by length, padded to a
multiple of 8), loss on `y </s>` only. Every round runs one step of each variant on the same batch:

    xling fine-tune       translate.finetune's step: loss_fn (compiled; the output layer on each row's
                          target span only), bf16 autocast where native, fused AdamW, gradient clipping
    ..., output layer     the same, but the output layer at every position and the loss masked (the form
         everywhere       before target spans: what a compiled graph with (B, T) shapes does without them)
    HF fp32 / bf16        LlamaForCausalLM(input_ids, attention_mask, labels) with the same targets, a plain
                          PyTorch loop (AdamW, clipping), without / with bf16 autocast

The table shows median step times and target tokens/s; the last line is machine-readable `name=value` pairs
(ratio_fp32 = xling / HF fp32, ratio_bf16 = xling / HF bf16, peak_fraction = xling's share of the peak of its
precision). The fp32 and bf16 matmul peaks are measured in the same run; "% peak" is model GFLOP/s per step
(6 * body parameters * real tokens + 12 * layers * T * d * real tokens + 6 * V * d * target tokens) over the peak
of the variant's precision. At fp32 the first step's losses of xling and
HF agree to 1e-4 (asserted): the same function is being timed.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_peak.py

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _peak import cpu_line, peak_text, peaks, share  # noqa: E402

from xling.batches import IGNORE  # noqa: E402
from xling.model import ModelConfig, Transformer  # noqa: E402
from xling.precision import autocast_dtype, training_autocast  # noqa: E402
from xling.progress import format_table  # noqa: E402
from xling.tasks.translate.config import TranslateConfig  # noqa: E402
from xling.tasks.translate.data import Example, make_batch
from xling.tasks.translate.finetune import POOL
from xling.tasks.translate.loss import loss_fn
from xling.trainer import compiled_call  # noqa: E402

SRC_TAG, TGT_TAG = 5, 6


def examples(n: int, rng: np.random.Generator) -> list[Example]:
    lens = rng.normal(34, 12, size=(n, 2)).clip(8, 60).astype(int)  # en/fr verses: ~35 tokens a side
    return [Example(rng.integers(20, 8000, a), rng.integers(20, 8000, b), SRC_TAG, TGT_TAG) for a, b in lens]


def batches(exs: list[Example], n: int, B: int, rng: np.random.Generator) -> list[dict]:
    """What finetune draws: a window of B from a POOL x B pool sorted by length."""
    lengths = np.array([len(e) for e in exs])
    out = []
    for _ in range(n):
        pool = rng.integers(0, len(exs), POOL * B)
        pool = pool[np.argsort(lengths[pool], kind="stable")]
        start = int(rng.integers(0, len(pool) - B + 1))
        out.append(make_batch([exs[i] for i in pool[start:start + B]], pad_multiple=8, max_len=128))
    return out


def everywhere_loss(model, batch, label_smoothing: float = 0.1):
    """The masked form: the output layer at all B x T positions."""
    hidden = model(batch["idx"], lang_ids=batch["lang_ids"])
    logits = model.lm_head(hidden).float()  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), ignore_index=IGNORE,
                           label_smoothing=label_smoothing)


def hf_labels(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask, labels for HF (which shifts labels left by one): one pad column appended so
    the last target of the longest row is kept."""
    idx = F.pad(batch["idx"], (0, 1))
    targets = F.pad(batch["targets"], (0, 1), value=IGNORE)
    labels = torch.cat([torch.full_like(targets[:, :1], IGNORE), targets[:, :-1]], 1)
    return idx, (idx != 0).long(), labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    from xling.hf import to_hf

    base = Transformer(ModelConfig(vocab_size=8000, block_size=128, n_layer=4, d_model=256, n_head=4))
    hf_base = to_hf(base)
    hf_base.config._attn_implementation = "sdpa"
    # a 10-minute budget, so loss_fn compiles (budgets under 2 minutes run eagerly); no smoothing: HF's loss has none
    cfg = TranslateConfig(max_minutes=10, label_smoothing=0.0)
    amp = autocast_dtype("auto", torch.device("cpu"))
    data = batches(examples(4000, rng), args.warmup + args.rounds, args.batch, rng)

    def trainer(model, opt, forward):
        """One optimizer step on a batch: forward(model, batch) -> loss, backward, clip, step."""
        def step(batch):
            out = forward(model, batch)
            opt.zero_grad(set_to_none=True)
            out.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            return out.item()
        return step

    def ours(loss):
        model = copy.deepcopy(base).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), fused=True)

        def forward(model, batch):
            with training_autocast("cpu", amp):
                return loss(model, batch)
        return trainer(model, opt, forward)

    def compiled(fn):
        graph = torch.compile(fn)

        def call(model, batch):
            with compiled_call(batch, variable_length=True, math_sdpa=True):
                return graph(model, batch)
        return call

    def hf(dtype):
        model = copy.deepcopy(hf_base).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98))

        def forward(model, batch):
            idx, mask, labels = hf_labels(batch)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                return model(input_ids=idx, attention_mask=mask, labels=labels).loss
        return trainer(model, opt, forward)

    variants = {"xling fine-tune": ours(loss_fn(cfg, torch.device("cpu"))),
                "xling, output layer everywhere": ours(compiled(functools.partial(everywhere_loss,
                                                                                  label_smoothing=0.0))),
                "HF fp32": hf("fp32"), "HF bf16": hf("bf16")}
    with torch.no_grad():  # the same function: first-batch losses at fp32 agree
        b = data[0]
        ours32 = everywhere_loss(base, b, 0.0).item()
        hf32 = hf_base(**dict(zip(("input_ids", "attention_mask", "labels"), hf_labels(b), strict=True))).loss.item()
        assert abs(ours32 - hf32) < 1e-4, (ours32, hf32)
    times = {k: [] for k in variants}
    for r, batch in enumerate(data):
        for name, step in variants.items():
            t0 = time.perf_counter()
            step(batch)
            if r >= args.warmup:
                times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}/{len(data)}", file=sys.stderr, flush=True)
    tokens = statistics.mean(int((b["targets"] != IGNORE).sum()) for b in data[args.warmup:])
    real = statistics.mean(int((b["idx"] != 0).sum()) for b in data[args.warmup:])
    T = statistics.mean(b["idx"].shape[1] for b in data[args.warmup:])
    c = base.cfg
    head = c.vocab_size * c.d_model
    flops = (6 * (base.num_params() - head) + 12 * c.n_layer * T * c.d_model) * real + 6 * head * tokens
    peak = peaks()
    prec = {"xling fine-tune": "bf16" if amp else "fp32", "xling, output layer everywhere": "bf16" if amp else "fp32",
            "HF fp32": "fp32", "HF bf16": "bf16"}
    med = {k: statistics.median(v) for k, v in times.items()}
    gf = {k: flops / med[k] / 1e9 for k in variants}
    rows = [[k, f"{med[k] * 1e3:.0f}", f"{tokens / med[k]:,.0f}", med["HF fp32"] / med[k], med["HF bf16"] / med[k],
             f"{gf[k]:.0f}", share(gf[k], peak[prec[k]])] for k in variants]
    print(f"{cpu_line()}; {peak_text(peak)}")
    print(format_table(["variant", "step ms", "target tokens/s", "x HF fp32", "x HF bf16", "GFLOP/s", "% peak"], rows,
                       title=f"Translation fine-tune step, batch {args.batch}, {args.threads} threads, "
                             f"medians of {args.rounds} rounds (losses agree at fp32: {ours32:.4f} vs {hf32:.4f})"))
    key = "xling fine-tune"
    print(f"threads={args.threads} batch={args.batch} step_ms={med[key] * 1e3:.1f} "
          f"step_ms_everywhere={med['xling, output layer everywhere'] * 1e3:.1f} "
          f"hf_fp32_ms={med['HF fp32'] * 1e3:.1f} hf_bf16_ms={med['HF bf16'] * 1e3:.1f} "
          f"ratio_fp32={med['HF fp32'] / med[key]:.2f} ratio_bf16={med['HF bf16'] / med[key]:.2f} "
          f"span_gain={med['xling, output layer everywhere'] / med[key]:.2f} "
          f"peak_fraction={gf[key] / peak[prec[key]]:.3f} fp32_peak_gflops={peak['fp32']:.0f} "
          f"bf16_peak_gflops={peak['bf16']:.0f}")


if __name__ == "__main__":
    main()
