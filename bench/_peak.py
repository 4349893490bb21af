"""The machine's bf16 matrix-multiply peak: the physical limit a training benchmark is measured against.

    python bench/_peak.py            # prints the peak and `bf16_peak_gflops=...`

Times 2048^3 bf16 matmuls (oneDNN's AVX512-BF16 kernels on this CPU) with 2 threads and reports
the best round in GFLOP/s (2 * n^3 flops per matmul). Imported by bench/train_throughput.py.
"""

from __future__ import annotations

import time

import torch


def bf16_matmul_peak(n: int = 2048, threads: int = 2, rounds: int = 5, reps: int = 4) -> float:
    """Best-of-`rounds` GFLOP/s of `reps` back-to-back (n, n) @ (n, n) bf16 matmuls on `threads` threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(n, n).to(torch.bfloat16)
        b = torch.randn(n, n).to(torch.bfloat16)
        out = torch.empty(n, n, dtype=torch.bfloat16)
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


if __name__ == "__main__":
    peak = bf16_matmul_peak()
    print(f"bf16 matmul peak (2048^3, 2 threads): {peak:,.0f} GFLOP/s")
    print(f"bf16_peak_gflops={peak:.1f}")
