"""Decoding speed: xling's KV-cache generation against Hugging Face `generate` on the same weights.

    python bench/generate.py                                  # default family, wall clock, all threads
    python bench/generate.py --family gpt2 --threads 1 --clock cpu

The model: vocab 8000, block 512, 4 layers, d 256, 4 heads, random initialisation, in one of the two
export families of xling.model (default: the default config's, "llama" = rope + RMSNorm + SwiGLU;
"gpt2" = learned positions + LayerNorm + GELU); its weights are copied into the equal Hugging Face
model (LlamaForCausalLM / GPT2LMHeadModel, SDPA attention). Greedy decoding of 256 new tokens after a
16-token prompt, batch 1 and batch 8 (equal-length prompts, so neither side pads), with fp32 and with
bf16 weights. Each round times HF and ours back to back in this process; the table shows medians.
Greedy tokens must equal HF's at fp32 (asserted); at bf16 the two implementations round differently,
so only their agreement is reported. One more row times ours on batch-8 prompts of different lengths
(left padding, per-row positions); HF is not timed there.

The default precision comes first: a line before the table gives, per batch size, what "auto" picked (the
"decode1" / "decode" paths of xling.precision, measured on this CPU and cached) and its ratio to HF fp32, and
how close it comes to our faster precision (target: within 5%). The fp32 and bf16 matmul peaks are measured in
the same run; "% peak" is achieved GFLOP/s (2 * parameters + 4 * layers * d * context per token) over the
peak of the row's precision (decoding is memory-bound at small batches, so this is far below 100%).

Last line: the default's ratios first (ratio_default and b1_/b8_default_vs_best = auto / our best), then
tokens/s and ratios (ours / HF) per batch size; ratio_fp32 and ratio_bf16 compare equal precision,
ratio_default = ours at xling's default precision for that batch / HF fp32, ratio_best = our faster precision
/ HF fp32. The unprefixed ratio_default, ratio_fp32 and ratio_best are batch 1's. Progress lines go to stderr.

On a shared machine, `--threads 1 --clock cpu` (process CPU time) gives steadier ratios: with two
threads, a busy machine stalls every small parallel op and the wall clock measures the load.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_peak.py

import torch  # noqa: E402
from _peak import cpu_line, peak_text, peaks, share  # noqa: E402

from xling.generate import GenerateConfig, generate_ids  # noqa: E402
from xling.model import FAMILIES, ModelConfig, Transformer  # noqa: E402
from xling.precision import for_precision, resolve_precision  # noqa: E402

DEFAULT_FAMILY = next(name for name, f in FAMILIES.items()
                      if all(getattr(ModelConfig(), k) == v for k, v in f.items()))
from xling.progress import format_table  # noqa: E402


def to_hf(model: Transformer):
    """The same weights in transformers' LlamaForCausalLM / GPT2LMHeadModel: what `xling export` writes."""
    from xling.hf import to_hf as export

    hf = export(model)
    hf.config._attn_implementation = "sdpa"
    return hf


def hf_generate(hf, prompts: torch.Tensor, new_tokens: int) -> torch.Tensor:
    out = hf.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens,
                      do_sample=False, num_beams=1, eos_token_id=None, pad_token_id=0)
    return out[:, prompts.shape[1]:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--family", choices=sorted(FAMILIES), default=DEFAULT_FAMILY,
                    help="architecture family; the default is xling's default config")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: process CPU time, steadier on a shared machine (use with --threads 1)")
    args = ap.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = Transformer(ModelConfig(vocab_size=8000, block_size=512, n_layer=4, d_model=256, n_head=4,
                                    **FAMILIES[args.family])).eval()
    hf32 = to_hf(model)
    models = {"fp32": (model, hf32),
              "bf16": (for_precision(model, "bf16"), copy.deepcopy(hf32).to(torch.bfloat16))}
    g = torch.Generator().manual_seed(1)
    prompts = {b: torch.randint(5, 8000, (b, args.prompt_len), generator=g) for b in (1, 8)}
    greedy = GenerateConfig(max_new_tokens=args.new_tokens, temperature=0.0)
    # left-padded batch: 8 prompts of lengths prompt_len-7 .. prompt_len (ours only)
    mixed = [prompts[8][i, :args.prompt_len - 7 + i].tolist() for i in range(8)]
    peak = peaks()
    cfg = model.cfg  # FLOPs per generated token: every weight once (2 per parameter), attention over the context
    flops = 2 * model.num_params() + 4 * cfg.n_layer * cfg.d_model * (args.prompt_len + args.new_tokens // 2)

    rows, tps = [], {}
    for prec, (m, hf) in models.items():
        for b, x in prompts.items():
            want = hf_generate(hf, x, args.new_tokens).tolist()  # also the warm-up
            got = generate_ids(m, x.tolist(), greedy)
            same = sum(a == c for w, o in zip(want, got, strict=True) for a, c in zip(w, o, strict=True))
            if prec == "fp32":
                assert got == want, f"greedy tokens differ from HF at fp32, batch {b}"
            t_hf, t_ours = [], []
            for _ in range(args.rounds):
                t0 = clock()
                hf_generate(hf, x, args.new_tokens)
                t1 = clock()
                generate_ids(m, x.tolist(), greedy)
                t2 = clock()
                t_hf.append(t1 - t0)
                t_ours.append(t2 - t1)
            n = b * args.new_tokens
            hf_tps = tps["hf", prec, b] = n / statistics.median(t_hf)
            our_tps = tps["ours", prec, b] = n / statistics.median(t_ours)
            print(f"{prec} batch {b}: HF {hf_tps:.0f} tok/s, xling {our_tps:.0f} tok/s", file=sys.stderr,
                  flush=True)
            rows.append([f"HF generate, {prec}", b, round(hf_tps), 1.0, "-", share(hf_tps * flops / 1e9, peak[prec])])
            rows.append([f"xling generate_ids, {prec}", b, round(our_tps), our_tps / hf_tps,
                         f"{same / (b * args.new_tokens):.0%}", share(our_tps * flops / 1e9, peak[prec])])
        t_mixed = []
        for _ in range(args.rounds):
            t0 = clock()
            generate_ids(m, mixed, greedy)
            t_mixed.append(clock() - t0)
        rows.append([f"xling, {prec}, left-padded ({len(mixed[0])}..{len(mixed[-1])})", 8,
                     round(8 * args.new_tokens / statistics.median(t_mixed)), "", "", ""])

    # xling's default precision ("auto") for each batch size: what generate() and `xling generate` use
    default = {b: "bf16" if resolve_precision("auto", "cpu", b, cfg.d_model) == torch.bfloat16 else "fp32"
               for b in prompts}
    best_of = {b: max(("fp32", "bf16"), key=lambda p, b=b: tps["ours", p, b]) for b in prompts}
    vs_best = {b: tps["ours", default[b], b] / tps["ours", best_of[b], b] for b in prompts}
    print(f"{cpu_line()}; {peak_text(peak)}")
    print("xling's default precision (auto): " + "; ".join(
        f"batch {b} {default[b]}: {tps['ours', default[b], b] / tps['hf', 'fp32', b]:.2f}x HF fp32, "
        f"{vs_best[b]:.1%} of our faster precision ({best_of[b]})" for b in prompts))
    print(format_table(["variant", "batch", "tokens/s", "x HF same precision", "greedy = HF", "% peak"], rows,
                       title=f"Greedy decoding, {args.family} family, {args.new_tokens} new tokens, "
                             f"{args.threads} threads, "
                             f"{args.clock} clock, medians of {args.rounds} rounds "
                             f"(xling's default precision here: batch 1 {default[1]}, batch 8 {default[8]})"))
    parts = [f"ratio_default={tps['ours', default[1], 1] / tps['hf', 'fp32', 1]:.2f}",
             f"b8_ratio_default={tps['ours', default[8], 8] / tps['hf', 'fp32', 8]:.2f}",
             f"b1_default_vs_best={vs_best[1]:.3f}", f"b8_default_vs_best={vs_best[8]:.3f}",
             f"family={args.family}", f"threads={args.threads}", f"clock={args.clock}",
             f"fp32_peak_gflops={peak['fp32']:.0f}", f"bf16_peak_gflops={peak['bf16']:.0f}"]
    for b in (1, 8):
        for who in ("hf", "ours"):
            parts += [f"b{b}_{who}_{prec}={tps[who, prec, b]:.0f}" for prec in ("fp32", "bf16")]
        best = max(("fp32", "bf16"), key=lambda p, b=b: tps["ours", p, b])
        parts += [f"b{b}_ratio_fp32={tps['ours', 'fp32', b] / tps['hf', 'fp32', b]:.2f}",
                  f"b{b}_ratio_bf16={tps['ours', 'bf16', b] / tps['hf', 'bf16', b]:.2f}",
                  f"b{b}_ratio_default={tps['ours', default[b], b] / tps['hf', 'fp32', b]:.2f}",
                  f"b{b}_ratio_best={tps['ours', best, b] / tps['hf', 'fp32', b]:.2f}", f"b{b}_best={best}"]
    best = max(("fp32", "bf16"), key=lambda p: tps["ours", p, 1])
    parts += [f"default_b1={default[1]}", f"default_b8={default[8]}",
              f"ratio_fp32={tps['ours', 'fp32', 1] / tps['hf', 'fp32', 1]:.2f}",
              f"ratio_best={tps['ours', best, 1] / tps['hf', 'fp32', 1]:.2f}"]
    print(" ".join(parts))


if __name__ == "__main__":
    main()
