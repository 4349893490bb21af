"""The machine's matrix-multiply peaks, fp32 and bf16: the physical limit every speed figure is measured against.

    python bench/_peak.py            # prints both peaks and `fp32_peak_gflops=... bf16_peak_gflops=...`
    python bench/_peak.py --n 1024 --rounds 2

Times large square matmuls (2048^3) with torch.mm at the threads the benchmark uses and reports the best round in
GFLOP/s (2 * n^3 flops per matmul): fp32 through the BLAS that every fp32 `nn.Linear` calls (MKL; on AMD CPUs it
runs AVX2 code, so it is lower than the chip's fp32 limit, PERF.md), bf16 through oneDNN (AVX512-BF16 or AMX
tiles). Imported by the benchmarks, which print their achieved FLOP/s as a share of the peak of the precision the
work ran in (`share`), and say which CPU (`cpu_line`).
"""

from __future__ import annotations

import time

import torch


def matmul_peak(dtype: torch.dtype = torch.bfloat16, n: int = 2048, threads: int | None = None, rounds: int = 5,
                reps: int = 4) -> float:
    """Best-of-`rounds` GFLOP/s of `reps` back-to-back (n, n) @ (n, n) matmuls in `dtype` on `threads` threads
    (default: torch's current count)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads or old)
    try:
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        out = torch.empty(n, n, dtype=dtype)
        torch.mm(a, b, out=out)  # warm-up: kernel selection, page faults
        best = 0.0
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b, out=out)
            dt = time.perf_counter() - t0
            best = max(best, 2 * n**3 * reps / dt / 1e9)
        return best
    finally:
        torch.set_num_threads(old)


def bf16_matmul_peak(n: int = 2048, threads: int = 2, rounds: int = 5, reps: int = 4) -> float:
    """matmul_peak in bf16 (kept for the benchmarks that import it by this name)."""
    return matmul_peak(torch.bfloat16, n, threads, rounds, reps)


def peaks(n: int = 2048, threads: int | None = None, rounds: int = 3, reps: int = 2) -> dict[str, float]:
    """{"fp32": GFLOP/s, "bf16": GFLOP/s} at `threads` (default: torch's current count); ~3 s on 2 threads."""
    return {"fp32": matmul_peak(torch.float32, n, threads, rounds, reps),
            "bf16": matmul_peak(torch.bfloat16, n, threads, rounds, reps)}


def cpu_line() -> str:
    """The CPU, its bf16 kind and torch's kernels: what every figure must be read against."""
    from xling.precision import cpu_capability, cpu_kind, cpu_name

    kind = {"amx": "AMX-BF16", "avx512_bf16": "AVX512-BF16, no AMX", "none": "no native bf16"}[cpu_kind()]
    return (f"{cpu_name()} ({kind}; ATen {cpu_capability()}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads)")


def share(gflops: float, peak: float) -> str:
    """'12.3%' of the peak, or '-' without a peak."""
    return f"{100 * gflops / peak:.1f}%" if peak > 0 else "-"


def peak_text(p: dict[str, float], n: int = 2048) -> str:
    return (f"matmul peak ({n}^3, {torch.get_num_threads()} threads): fp32 {p['fp32']:,.0f}, "
            f"bf16 {p['bf16']:,.0f} GFLOP/s")


if __name__ == "__main__":
    import argparse
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = peaks(args.n, args.threads, args.rounds, reps=4)
    print(cpu_line())
    print(peak_text(p, args.n))
    print(f"fp32_peak_gflops={p['fp32']:.1f} bf16_peak_gflops={p['bf16']:.1f}")
