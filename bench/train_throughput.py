"""Training throughput: xling's Transformer against Hugging Face GPT-2, side by side in one process.

    python bench/train_throughput.py                 # 20 timed steps per variant after warm-up
    python bench/train_throughput.py --steps 40
    python bench/train_throughput.py --threads 1   # on a busy shared machine: no thread waits on a
                                                   # descheduled partner, so ratios stay readable
    python bench/train_throughput.py --size large --steps 4   # d 768, 12 layers, context 512: AMX tiles fill

Trains a small decoder LM (vocab 8000, context 128, 4 layers, d 256, 4 heads, batch 16, dropout 0)
on random tokens with next-token cross-entropy and AdamW, in these variants:

    xling Trainer     xling.trainer.Trainer.step() with every speed setting left at its default, a 10-minute
                      budget (what `make demo` runs): train.compile "auto" (which compiles at that budget),
                      precision "auto" (this machine's measured choice), the CLM objective drawing batches from
                      in-memory shards of random tokens, fused AdamW, gradient clipping, warmup + cosine lr,
                      per-language stats: the whole step a user gets
    xling fast        model + loss alone: the default model (Llama family: rope, RMSNorm, SwiGLU, no biases) on the
                      fastest CPU path measured: bf16 autocast + torch.compile(fullgraph=True,
                      dynamic=False) of forward + loss, SDPA on its math backend inside the compiled
                      region, fused AdamW (fullgraph proves the model has no graph breaks)
    ..., flash SDPA   the same with SDPA's default CPU (flash) kernel
    xling gpt2 fast   the fast path with FAMILIES["gpt2"], exactly HF GPT-2's architecture
    xling fp32/bf16   the default model, eager, plain AdamW, without / with bf16 autocast; the loss is xling's
                      (`xling.losses.cross_entropy`, blocked when eager, F.cross_entropy when compiled)
    hf fp32/bf16      GPT2LMHeadModel (SDPA attention), plain PyTorch loop, plain AdamW

xling.allocator's malloc thresholds (set by every Trainer) hold for the whole process, so the HF rows run with them
too; in a process of their own HF runs ~3% slower (docs/measurements.md), so the ratios here are conservative.
Steps of all variants are interleaved, one step of each per round by default (the machine is shared
and noisy, so every variant sees the same load); each figure is the median step time over all timed
steps. The fp32 and bf16 matmul peaks (2048^3, as many threads as training: 2) are measured in every round
too, and the peak is the median over rounds of the best of two matmuls (on a quiet machine this is
simply the peak; on a busy one it is loaded like the training steps it is compared with).
Achieved GFLOP/s counts, per token, 6 * N + 12 * n_layer * T * d_model (the PaLM / nanoGPT formula),
each variant with its own N: parameters without position embeddings, the tied output matrix counted
once (it is a matmul in the head); the second term is attention's QK^T and AV, forward and backward,
without the causal halving. The last line is machine-readable (xling = the default path).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_peak.py
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # xling from a source checkout

from _peak import cpu_line, matmul_peak  # noqa: E402

from xling.allocator import keep_freed_memory  # noqa: E402
from xling.losses import cross_entropy  # noqa: E402
from xling.model import FAMILIES, ModelConfig, Transformer  # noqa: E402
from xling.objectives import build_objectives  # noqa: E402
from xling.progress import format_table  # noqa: E402
from xling.train_config import TrainConfig  # noqa: E402
from xling.trainer import Trainer  # noqa: E402

# the default model (the demo's) and a larger one, where the matrix products are big enough to fill AMX tiles
SIZES = {"default": (8000, 128, 4, 256, 4, 16), "large": (8000, 512, 12, 768, 12, 8)}
VOCAB, CTX, LAYERS, D, HEADS, BATCH = SIZES["default"]


class Variant(NamedTuple):
    model: torch.nn.Module
    loss_fn: Callable | None  # (x, y) -> loss; None: `trainer` draws its own batches
    opt: torch.optim.Optimizer | None
    autocast: bool
    n_params: int  # the tied output matrix counted once
    flops_per_token: int  # 6 * (n_params - position embeddings) + 12 * n_layer * T * d_model
    trainer: object = None  # an xling Trainer whose step() is timed instead


def variant(model, loss_fn, opt, autocast: bool, n_params: int, pos_params: int, trainer=None) -> Variant:
    flops = 6 * (n_params - pos_params) + 12 * LAYERS * CTX * D
    return Variant(model, loss_fn, opt, autocast, n_params, flops, trainer)


class RandomShards:
    """The slice of xling.shards.Shards that the CLM objective reads: one language of random tokens."""

    def __init__(self, n_segments: int = 4000, seg_len: int = 40):
        rng = np.random.default_rng(0)
        self.vocab_size, self.langs = VOCAB, ["en"]
        self.specials = {"pad": 0, "bos": 1, "eos": 2, "unk": 3, "mask": 4}
        self.lang_token_ids = {"en": 5}
        self._tokens = rng.integers(6, VOCAB, n_segments * seg_len).astype(np.uint16)
        self._offsets = np.arange(0, n_segments * seg_len + 1, seg_len, dtype=np.int64)

    def num_segments(self, split: str, lang: str) -> int:
        return len(self._offsets) - 1

    def offsets(self, split: str, lang: str) -> np.ndarray:
        return self._offsets

    def tokens(self, split: str, lang: str) -> np.ndarray:
        return self._tokens


def trainer_variant() -> Variant:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=VOCAB, block_size=CTX, n_layer=LAYERS, d_model=D, n_head=HEADS, dropout=0.0)
    model = Transformer(cfg)
    shards = RandomShards()
    tc = TrainConfig(objectives={"clm": 1.0}, batch_size=BATCH, seq_len=CTX, lr=3e-4, warmup_steps=10,
                     max_minutes=10.0, eval_every=0, ckpt_every=0, log_every=1_000_000)  # compile, precision: defaults
    trainer = Trainer(model, build_objectives(tc.objectives, shards), shards, tc)
    print(f"xling Trainer with the defaults: compiled {trainer.compiles}, autocast {trainer.amp_dtype or 'off (fp32)'}",
          file=sys.stderr)
    return variant(model, None, None, trainer.amp_dtype is not None, model.num_params(), 0, trainer)


def xling_variant(family: str, autocast: bool, compiled: bool, fused: bool,
                  math_sdpa: bool = False) -> Variant:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=VOCAB, block_size=CTX, n_layer=LAYERS, d_model=D, n_head=HEADS, dropout=0.0,
                      **FAMILIES[family])
    model = Transformer(cfg).train()

    def loss_fn(x, y):
        # math_sdpa: SDPA as plain matmuls + softmax, which inductor fuses; the CPU flash kernel's
        # backward is slow at these sizes
        with sdpa_kernel(SDPBackend.MATH) if math_sdpa else contextlib.nullcontext():
            logits = model.lm_head(model(x))  # (B, T, V)
        return cross_entropy(logits.flatten(0, 1), y.flatten())  # xling's loss: F.cross_entropy when compiled

    if compiled:
        loss_fn = torch.compile(loss_fn, fullgraph=True, dynamic=False)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=fused or None)
    pos = model.wpe.weight.numel() if model.wpe is not None else 0
    return variant(model, loss_fn, opt, autocast, model.num_params(), pos)


def hf_variant(autocast: bool) -> Variant:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=CTX, n_embd=D, n_layer=LAYERS, n_head=HEADS,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2)
    model = GPT2LMHeadModel(cfg).train()

    def loss_fn(x, y):
        logits = model(input_ids=x).logits  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())

    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    n_params = sum(p.numel() for p in model.parameters())  # tied lm_head counted once
    return variant(model, loss_fn, opt, autocast, n_params, CTX * D)


def train_step(v: Variant, x: torch.Tensor, y: torch.Tensor) -> float:
    if v.trainer is not None:
        return v.trainer.step()["loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=v.autocast):
        loss = v.loss_fn(x, y)
    loss.backward()
    v.opt.step()
    v.opt.zero_grad(set_to_none=True)
    return loss.item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant (after warm-up)")
    ap.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default: one per timed step)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per variant (compile included)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training and the peak")
    ap.add_argument("--size", choices=list(SIZES), default="default",
                    help="large: d 768, 12 layers, context 512, batch 8 (only the Trainer, the fast path and HF)")
    args = ap.parse_args()
    global VOCAB, CTX, LAYERS, D, HEADS, BATCH
    VOCAB, CTX, LAYERS, D, HEADS, BATCH = SIZES[args.size]
    torch.set_num_threads(args.threads)
    kept = keep_freed_memory()  # what the Trainer sets: process-wide, so every row below runs with it
    print(f"malloc thresholds of xling.allocator: {'set' if kept else 'left alone'}", file=sys.stderr)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; vocab {VOCAB}, ctx {CTX}, "
          f"{LAYERS} layers, d {D}, {HEADS} heads, batch {BATCH}", file=sys.stderr)

    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, VOCAB, (BATCH, CTX + 1), generator=g) for _ in range(8)]
    batches = [(b[:, :-1].contiguous(), b[:, 1:].contiguous()) for b in batches]

    fast = "xling Trainer, defaults"
    variants = {fast: trainer_variant(),
                "xling fast (model + loss only)": xling_variant("llama", True, True, True, math_sdpa=True)}
    if args.size == "default":
        variants |= {
            "xling fast, flash SDPA kernel": xling_variant("llama", True, True, True),
            "xling gpt2 fast (GPT-2 family, same path)": xling_variant("gpt2", True, True, True, math_sdpa=True),
            "xling fp32 eager": xling_variant("llama", False, False, False),
            "xling bf16 eager": xling_variant("llama", True, False, False),
        }
    variants |= {"hf GPT2 fp32": hf_variant(False), "hf GPT2 bf16": hf_variant(True)}
    if args.size == "default":
        gpt2, hf = variants["xling gpt2 fast (GPT-2 family, same path)"], variants["hf GPT2 fp32"]
        assert gpt2.n_params == hf.n_params, (gpt2.n_params, hf.n_params)  # the same architecture

    times: dict[str, list[float]] = {name: [] for name in variants}
    losses: dict[str, float] = {}
    for name, v in variants.items():
        t0 = time.perf_counter()
        for i in range(args.warmup):
            losses[name] = train_step(v, *batches[i % len(batches)])
        print(f"warm-up {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    rounds = args.rounds or args.steps
    per_round = max(1, args.steps // rounds)
    peaks: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(rounds):
        for name, v in variants.items():
            for i in range(per_round):
                x, y = batches[(r * per_round + i) % len(batches)]
                t0 = time.perf_counter()
                losses[name] = train_step(v, x, y)
                times[name].append(time.perf_counter() - t0)
        for prec, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            peaks[prec].append(matmul_peak(dtype, threads=args.threads, rounds=1, reps=2))
        if (r + 1) % 5 == 0 or r + 1 == rounds:
            print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    peak32 = statistics.median(peaks["fp32"])
    peak = statistics.median(peaks["bf16"])

    tok = {name: BATCH * CTX / statistics.median(ts) for name, ts in times.items()}
    gflops = {name: tok[name] * v.flops_per_token / 1e9 for name, v in variants.items()}
    hf32, hf16 = tok["hf GPT2 fp32"], tok["hf GPT2 bf16"]
    rows = []
    for name, v in variants.items():
        rows.append([name, v.n_params, round(tok[name]), f"{statistics.median(times[name]) * 1e3:.0f}",
                     f"{tok[name] / hf32:.2f}",
                     f"{tok[name] / hf16:.2f}", f"{gflops[name]:.0f}", f"{100 * gflops[name] / peak:.0f}",
                     f"{100 * gflops[name] / (peak if v.autocast else peak32):.0f}", f"{losses[name]:.3f}"])
    print(format_table(["variant", "params", "tokens/s", "ms/step", "x HF fp32", "x HF bf16", "GFLOP/s",
                        "% bf16 peak", "% own peak", "last loss"], rows,
                       title=f"Training throughput, {BATCH}x{CTX} tokens/step, "
                             f"{len(times[fast])} timed steps each (median)"))
    print(f"\n{cpu_line()}; matmul peak (2048^3, {args.threads} threads): fp32 {peak32:.0f}, bf16 {peak:.0f} "
          f"GFLOP/s (own peak = the peak of the variant's precision); "
          f"flops/token = 6*N + 12*L*T*d (default model: 6*{variants[fast].n_params:,} + "
          f"12*{LAYERS}*{CTX}*{D} = {variants[fast].flops_per_token:,})")
    print(f"size={args.size} xling_tok_s={tok[fast]:.0f} hf_fp32_tok_s={hf32:.0f} hf_bf16_tok_s={hf16:.0f} "
          f"ratio_fp32={tok[fast] / hf32:.2f} ratio_bf16={tok[fast] / hf16:.2f} "
          f"default_ratio_fp32={tok[fast] / hf32:.2f} default_ratio_bf16={tok[fast] / hf16:.2f} "
          f"peak_fraction={gflops[fast] / peak:.3f} fp32_peak_gflops={peak32:.0f} bf16_peak_gflops={peak:.0f}")


if __name__ == "__main__":
    main()
