"""Precision: one rule for every path that chooses between fp32 and bf16 (training, decoding, encoding).

    autocast_dtype("auto", torch.device("cpu"))               # training: bf16 or None (fp32), by the rule below
    autocast_dtype("auto", torch.device("cpu"), path="encode", width=256)   # sentence encoding
    resolve_precision("auto", "cpu", rows=1)                   # decoding one row ("decode1") or many ("decode")
    model = for_precision(model, "bf16")                       # a bf16 copy for decoding (the model itself if already)
    choose("encode", width=256)                                # "bf16" | "fp32", and the reason (the rule itself)

"fp32" and "bf16" are taken as asked. "auto" is chosen per path, for the CPU at hand:
- no native bf16 (neither the AVX512-BF16 nor the AMX-BF16 flag): fp32, without measuring (bf16 is emulated there);
- CUDA with bf16 support: bf16;
- a CPU with native bf16: whichever of fp32 and bf16 a short micro-benchmark of that path's matrix products at the
  model's width found faster (bf16 must win by BF16_MARGIN, since it costs precision). Paths: "train" (forward and
  backward of an MLP block under autocast, 32768 / width tokens), "encode" (its forward, no grad), "decode1" (one row
  through bf16 *weights*, as `for_precision` casts them, and the output layer) and "decode" (8 rows). The CPU kind
  (AMX / AVX512-BF16 / neither) only decides whether to measure: the same family differs between machines
  (MKL's fp32 runs AVX2 code on AMD, oneDNN's bf16 matrix-vector kernels lose to it on one row, AMX tiles need
  rows to fill), so the table is measured, not assumed.
The measurement (~0.3 s at width 256; longer on a loaded machine) runs once per machine and is cached in
`<xling cache>/precision.json` ($XLING_CACHE or ~/.cache/xling), keyed by CPU model, flags, torch version, ATen CPU
capability, thread count and width. The table is printed once per process on stderr with its reason (unless the
environment set all of it).
A table measured while the machine was busy can be wrong: measure again on a quiet machine with

    python -m xling.precision [--width 256]      # measures, replaces the cached entry, prints the table

Override: XLING_PRECISION_TABLE="train=bf16,decode1=fp32,decode=bf16,encode=bf16" (or one value, "fp32" or "bf16",
for every path; paths it leaves out are measured). It applies on hardware with native bf16 only; the tests set it
so that no test measures.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import sys
import time

import torch
from torch import nn

from xling.errors import XlingError

PRECISIONS = ("auto", "fp32", "bf16")
PATHS = ("train", "decode1", "decode", "encode")  # what "auto" is chosen for, each on its own
ENV_TABLE = "XLING_PRECISION_TABLE"
BF16_MARGIN = 1.05  # "auto" takes bf16 only when the micro-benchmark finds it this many times faster than fp32
DEFAULT_WIDTH = 256  # the default model's d_model: the width measured when a caller does not say
MEASURE_VERSION = 2  # part of the cache key: a table measured by an older `measure` is measured again
MEASURE_VOCAB = 8000  # the output layer that decoding runs at every step (the default vocabulary)
# Decoding fewer rows than this (prompts x beams) is the "decode1" path, from here on "decode".
AUTO_BF16_MIN_ROWS = 2


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo; ("unknown", {}) where there is none."""
    name, flags = "unknown", frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and name == "unknown":
                    name = value.strip()
                elif key == "flags" and not flags:
                    flags = frozenset(value.split())
                if name != "unknown" and flags:
                    break
    except OSError:
        pass
    return name, flags


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" where there is none)."""
    return _cpuinfo()[0]


def cpu_kind() -> str:
    """"amx" (AMX-BF16 tiles), "avx512_bf16" (AVX512-BF16 dot products, no AMX) or "none" (bf16 emulated)."""
    flags = _cpuinfo()[1]
    if "amx_bf16" in flags:
        return "amx"
    return "avx512_bf16" if "avx512_bf16" in flags else "none"


def cpu_capability() -> str:
    """The ATen kernels torch runs here ("AVX512", "AVX2", ...; ATEN_CPU_CAPABILITY lowers it)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively (CUDA that supports it; a CPU with AVX512-BF16 or AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return cpu_kind() != "none"


def _width(width: int | None) -> int:
    """The measured width: the model's d_model rounded to a multiple of 64 within 64..1024 (one cache entry each)."""
    w = DEFAULT_WIDTH if width is None else int(width)
    return min(max(64, round(w / 64) * 64), 1024)


def machine_key(width: int | None = None) -> str:
    """What a measured table holds for: CPU model and flags, torch and its kernels, threads, width."""
    name, flags = _cpuinfo()
    import hashlib

    fl = hashlib.sha1(" ".join(sorted(flags)).encode()).hexdigest()[:12]
    return (f"v{MEASURE_VERSION} | {name} | flags {fl} | torch {torch.__version__} | {cpu_capability()} | "
            f"{torch.get_num_threads()} threads | width {_width(width)}")


def parse_table(spec: str) -> dict[str, str]:
    """XLING_PRECISION_TABLE's value -> {path: "fp32" | "bf16"}: "train=bf16,decode1=fp32" or one precision."""
    spec = spec.strip()
    if spec in ("fp32", "bf16"):
        return dict.fromkeys(PATHS, spec)
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        path, _, prec = (s.strip() for s in item.partition("="))
        if path not in PATHS or prec not in ("fp32", "bf16"):
            raise XlingError(f"{ENV_TABLE}={spec!r}: write PATH=fp32|bf16 pairs separated by commas, PATH one of "
                             f"{', '.join(PATHS)} (e.g. train=bf16,decode1=fp32), or one of fp32, bf16")
        out[path] = prec
    return out


# ---------------------------------------------------------------------------- the micro-benchmark

def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(width: int = DEFAULT_WIDTH, rounds: int = 5) -> dict[str, dict[str, float]]:
    """{path: {"fp32": seconds, "bf16": seconds}}: best-of-`rounds` time of each path's matrix products at
    `width`, fp32 and bf16 interleaved. ~0.3 s at width 256 on 2 quiet threads.

    train: an MLP block (width -> 4 width -> width, gelu) forward and backward on T tokens under autocast;
    encode: the same forward without grad; decode1 / decode: 1 / 8 rows through one decoding step's products as
    `xling.decode` runs them (a layer's qkv, output, SwiGLU up and down projections, then the output layer to
    MEASURE_VOCAB), 8 steps: fp32 weights stored transposed for `x @ W` (MKL's matrix-vector path, which
    `xling.decode` uses), bf16 weights through `F.linear` (as `for_precision` casts them). A plain nn.Linear stack
    got batch-1 decoding wrong on an AVX512-BF16 CPU (bf16 1.48x here, 0.80x in bench/generate.py).
    T = 32768 / width (128 at width 256) keeps every path's cost roughly constant.
    """
    g = torch.Generator().manual_seed(0)
    tokens = max(64, 32768 // width // 16 * 16)
    mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
    head = nn.Linear(width, MEASURE_VOCAB, bias=False)
    x = torch.randn(tokens, width, generator=g)
    hidden = 64 * round(8 * width / 3 / 64)  # the SwiGLU width of the default model (704 at width 256)
    step = [torch.randn(3 * width, width, generator=g), torch.randn(width, width, generator=g),
            torch.randn(2 * hidden, width, generator=g), torch.randn(width, hidden, generator=g), head.weight.detach()]
    dec = {"fp32": [w.t().contiguous() for w in step], "bf16": [w.to(torch.bfloat16) for w in step]}
    rows = {"decode1": torch.randn(1, width, generator=g), "decode": torch.randn(8, width, generator=g)}

    def train(prec: str) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
            loss = mlp(x).float().square().mean()
        loss.backward()

    def encode(prec: str) -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
            mlp(x)

    def decode(path: str, prec: str) -> None:
        qkv, out, up, down, vocab = dec[prec]
        mm = torch.matmul if prec == "fp32" else torch.nn.functional.linear
        x = rows[path].to(qkv.dtype)
        with torch.no_grad():
            for _ in range(8):
                mm(mm(x, qkv)[:, :width], out)
                y = mm(mm(x, up)[:, :hidden], down)
                mm(y, vocab)

    fns = {"train": train, "encode": encode, "decode1": functools.partial(decode, "decode1"),
           "decode": functools.partial(decode, "decode")}
    out: dict[str, dict[str, float]] = {}
    for path in PATHS:
        for prec in ("fp32", "bf16"):  # warm-up: kernel selection, first-touch allocation
            fns[path](prec)
        times = {"fp32": float("inf"), "bf16": float("inf")}
        for _ in range(rounds):
            for prec in ("fp32", "bf16"):
                times[prec] = min(times[prec], _seconds(functools.partial(fns[path], prec)))
        out[path] = times
    mlp.zero_grad(set_to_none=True)
    return out


def table_from(times: dict[str, dict[str, float]]) -> dict[str, str]:
    """{path: "bf16" where it was BF16_MARGIN times faster than fp32, else "fp32"}."""
    return {p: "bf16" if t["fp32"] >= BF16_MARGIN * t["bf16"] else "fp32" for p, t in times.items()}


# ---------------------------------------------------------------------------- the rule

_TABLES: dict[str, dict[str, str]] = {}  # machine key -> table, this process
_ANNOUNCED: set[str] = set()


def _announce(key: str, line: str) -> None:
    if key not in _ANNOUNCED:
        _ANNOUNCED.add(key)
        print(f"xling precision: {line}", file=sys.stderr, flush=True)


def _cache_path():
    from xling.files import cache_dir

    return cache_dir() / "precision.json"


def _read_cache() -> dict:
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _kind_words() -> str:
    return {"amx": "AMX-BF16", "avx512_bf16": "AVX512-BF16 without AMX", "none": "no native bf16"}[cpu_kind()]


def cpu_table(width: int | None = None) -> dict[str, str]:
    """{path: "fp32" | "bf16"} for this CPU (which must have native bf16) at `width`: from XLING_PRECISION_TABLE,
    this process, the cache, or measured now and cached; printed once with its reason."""
    override = parse_table(os.environ.get(ENV_TABLE, ""))  # read at every call: tests and users may change it
    if len(override) == len(PATHS):
        return {p: override[p] for p in PATHS}  # the user's choice: nothing to measure, nothing to announce
    key = machine_key(width)
    if key in _TABLES:
        return {**_TABLES[key], **override}
    entry = _read_cache().get(key)
    if isinstance(entry, dict) and all(entry.get("table", {}).get(p) in ("fp32", "bf16") for p in PATHS):
        how = f"measured {entry.get('when', 'earlier')}, cached in {_cache_path()}"
    else:
        t0 = time.perf_counter()
        times = measure(_width(width))
        entry = {"table": table_from(times), "speedup": {p: round(t["fp32"] / t["bf16"], 3) for p, t in times.items()},
                 "seconds": {p: {k: round(v, 6) for k, v in t.items()} for p, t in times.items()},
                 "cpu": _cpuinfo()[0], "kind": cpu_kind(), "when": time.strftime("%Y-%m-%d %H:%M")}
        how = f"measured now in {time.perf_counter() - t0:.1f} s, cached in {_cache_path()}"
        try:
            from xling.files import atomic_write_json

            atomic_write_json(_cache_path(), {**_read_cache(), key: entry})
        except (OSError, XlingError) as e:  # a read-only home: measure again next time, say why
            how = f"measured now (not cached: {e})"
    _TABLES[key] = measured = {p: entry["table"][p] for p in PATHS}
    table = {**measured, **override}
    speed = entry.get("speedup", {})
    words = ", ".join(f"{p} {table[p]}" + (f" (bf16 {speed[p]:.2f}x fp32)" if p in speed else "") for p in PATHS)
    extra = f"; {ENV_TABLE} sets {', '.join(override)}" if override else ""
    _announce(key, f"auto = {words} on {_cpuinfo()[0]} ({_kind_words()}, {torch.get_num_threads()} threads, "
                   f"width {_width(width)}): {how}{extra}")
    return table


def choose(path: str, device: torch.device | str = "cpu", width: int | None = None) -> str:
    """"bf16" or "fp32": what precision "auto" means for `path` (one of PATHS) on `device` at model width `width`."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {', '.join(PATHS)}, not {path!r}")
    device = torch.device(device)
    if not native_bf16(device):
        if device.type == "cpu":
            _announce("no-native", f"auto = fp32 on every path: {_cpuinfo()[0]} has no native bf16 "
                                   "(neither avx512_bf16 nor amx_bf16 in /proc/cpuinfo), so bf16 would be emulated")
        return "fp32"
    if device.type != "cpu":
        return "bf16"
    return cpu_table(width)[path]


def dtype_for(precision: str, device: torch.device | str = "cpu", path: str = "train",
              width: int | None = None) -> torch.dtype:
    """"fp32" -> float32, "bf16" -> bfloat16, "auto" -> `choose(path, device, width)`."""
    if precision == "auto":
        precision = choose(path, device, width)
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return torch.bfloat16 if precision == "bf16" else torch.float32


def resolve_precision(precision: str, device: torch.device | str = "cpu", rows: int | None = None,
                      width: int | None = None) -> torch.dtype:
    """The weights' dtype for decoding `rows` rows at once (None = many) with a model of width `width`:
    "auto" is the "decode1" path below AUTO_BF16_MIN_ROWS rows, else "decode" (see `choose`)."""
    path = "decode1" if rows is not None and rows < AUTO_BF16_MIN_ROWS else "decode"
    return dtype_for(precision, device, path, width)


def for_precision(model: nn.Module, precision: str, rows: int | None = None) -> nn.Module:
    """The model itself if its weights already have the precision's dtype, else an eval-mode copy cast to it.

    rows: how many sequences will be decoded at once (prompts x beams), which "auto" takes into account.
    Convert once with this and pass the result when calling `generate` many times.
    """
    param = next(model.parameters())
    dtype = resolve_precision(precision, param.device, rows, getattr(getattr(model, "cfg", None), "d_model", None))
    if param.dtype == dtype:
        return model
    return copy.deepcopy(model).to(dtype).eval()


def autocast_dtype(precision: str, device: torch.device, path: str = "train", width: int | None = None
                   ) -> torch.dtype | None:
    """bf16 for autocast, or None for fp32; "auto" follows `choose(path, ...)` (training unless told)."""
    dtype = dtype_for(precision, device, path, width)
    return None if dtype == torch.float32 else dtype


def training_autocast(device_type: str, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast for one training step that may run inside a caller's autocast (`xling evaluate` wraps every
    evaluation, fine-tunes included, in bf16).

    Autocast caches the low-precision copy of each fp32 weight until the *outermost* autocast exits. Inside a
    caller's autocast that is after the whole loop: every forward would reuse the copies cast at the first
    step while the optimizer updates the fp32 weights, so only uncast parameters (norms, embedding lookups)
    would learn. cache_enabled=False casts the current weights at every use.
    """
    return torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None, cache_enabled=False)


def remeasure(width: int | None = None) -> dict[str, str]:
    """Measure this machine's table at `width` again, replacing the cached entry (and this process's)."""
    key = machine_key(width)
    cache = _read_cache()
    if key in cache:
        del cache[key]
        from xling.files import atomic_write_json

        atomic_write_json(_cache_path(), cache)
    _TABLES.pop(key, None)
    _ANNOUNCED.discard(key)
    return cpu_table(width)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="measure which precision 'auto' takes on each path of this CPU")
    ap.add_argument("--width", type=int, default=DEFAULT_WIDTH, help="the model's d_model (default 256)")
    args = ap.parse_args()
    if not native_bf16(torch.device("cpu")):
        choose("train")  # says why: fp32 everywhere, nothing to measure
    else:
        print(json.dumps(remeasure(args.width)))
