"""Precision: one rule for every path that chooses between fp32 and bf16 (training, decoding, encoding).

    autocast_dtype("auto", torch.device("cpu"))      # bf16 where the CPU has native bf16, else None (fp32)
    resolve_precision("auto", "cpu", rows=1)          # decoding: fp32 for one row on the CPU, bf16 from two
    model = for_precision(model, "bf16")              # a bf16 copy for decoding (the model itself if already)

Native bf16 means CUDA that supports it or a CPU with the AVX512-BF16 or AMX flags; elsewhere bf16 is emulated
and slower than fp32, so "auto" stays fp32 there.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively (CUDA that supports it; a CPU with AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# "auto" on a CPU with native bf16: bf16 weights from this many rows (prompts x beams) up, fp32 below.
# Measured (bench/generate.py and a crossover run, 1 thread, CPU clock, d 256, V 8000): batch 1 fp32 374
# vs bf16 303 tok/s (oneDNN's bf16 matrix-vector kernels lose to MKL's fp32 on one row); batch 2 591 vs
# 724, batch 4 1014 vs 1310, batch 8 1429 vs 1634 (from two rows on, halving the bytes read wins).
AUTO_BF16_MIN_ROWS = 2


def resolve_precision(precision: str, device: torch.device | str = "cpu", rows: int | None = None
                      ) -> torch.dtype:
    """"fp32" -> float32, "bf16" -> bfloat16, "auto" -> the faster of the two for decoding `rows` rows
    at once (None = many): bfloat16 where the device computes it natively, except fp32 for a single
    row on the CPU (see AUTO_BF16_MIN_ROWS)."""
    if precision == "auto":
        device = torch.device(device)
        if not native_bf16(device):
            return torch.float32
        if device.type == "cpu" and rows is not None and rows < AUTO_BF16_MIN_ROWS:
            return torch.float32
        return torch.bfloat16
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]


def for_precision(model: nn.Module, precision: str, rows: int | None = None) -> nn.Module:
    """The model itself if its weights already have the precision's dtype, else an eval-mode copy cast to it.

    rows: how many sequences will be decoded at once (prompts x beams), which "auto" takes into account.
    Convert once with this and pass the result when calling `generate` many times.
    """
    param = next(model.parameters())
    dtype = resolve_precision(precision, param.device, rows)
    if param.dtype == dtype:
        return model
    return copy.deepcopy(model).to(dtype).eval()


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 for autocast, or None for fp32 ("auto": bf16 only where the hardware has native bf16)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if native_bf16(device) else None


def training_autocast(device_type: str, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast for one training step that may run inside a caller's autocast (`xling evaluate` wraps every
    evaluation, fine-tunes included, in bf16).

    Autocast caches the low-precision copy of each fp32 weight until the *outermost* autocast exits. Inside a
    caller's autocast that is after the whole loop: every forward would reuse the copies cast at the first
    step while the optimizer updates the fp32 weights, so only uncast parameters (norms, embedding lookups)
    would learn. cache_enabled=False casts the current weights at every use.
    """
    return torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None, cache_enabled=False)
