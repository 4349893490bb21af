"""The precision rule (xling.precision): per-path choice, measured once per machine and cached; bf16 sentence encoding.

No test here measures this machine for a decision: a fake CPU and a fake measurement stand in (conftest.py sets
XLING_PRECISION_TABLE for every other test). One test runs the micro-benchmark at a tiny width for its shape only.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from xling import precision
from xling.encode import encode, mean_pool
from xling.errors import XlingError
from xling.model import ModelConfig, Transformer

pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)

SPECIALS = {"pad": 0, "eos": 2}
AVX512_BF16 = ("Fake EPYC", frozenset({"sse2", "avx2", "avx512f", "avx512_bf16"}))
AMX = ("Fake Xeon", frozenset({"sse2", "avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}))
NO_BF16 = ("Fake Core", frozenset({"sse2", "avx2"}))


def fake_times(**speedup: float) -> dict[str, dict[str, float]]:
    """A measurement where bf16 runs `speedup[path]` times faster than fp32 (1.0 where not given)."""
    return {p: {"fp32": 1.0, "bf16": 1.0 / speedup.get(p, 1.0)} for p in precision.PATHS}


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A fresh process's view of a fake CPU: no table in memory, an empty cache, no override; returns a function
    that sets the CPU and the measurement, and the list of widths measured."""
    monkeypatch.delenv(precision.ENV_TABLE, raising=False)
    monkeypatch.setenv("XLING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "_TABLES", {})
    monkeypatch.setattr(precision, "_ANNOUNCED", set())
    measured: list[int] = []

    def use(cpu=AVX512_BF16, times=None):
        monkeypatch.setattr(precision, "_cpuinfo", lambda: cpu)

        def fake_measure(width, rounds=5):
            measured.append(width)
            return times or fake_times()

        monkeypatch.setattr(precision, "measure", fake_measure)
        return measured

    return use


def test_no_native_bf16_is_fp32_everywhere_without_measuring(machine, capsys):
    measured = machine(NO_BF16, fake_times(train=9, decode1=9, decode=9, encode=9))
    assert precision.cpu_kind() == "none" and not precision.native_bf16(torch.device("cpu"))
    assert [precision.choose(p) for p in precision.PATHS] == ["fp32"] * 4
    assert precision.autocast_dtype("auto", torch.device("cpu"), path="encode") is None
    assert precision.resolve_precision("auto", "cpu", rows=8) == torch.float32
    assert precision.autocast_dtype("bf16", torch.device("cpu")) == torch.bfloat16  # asked for: as asked
    assert measured == []
    err = capsys.readouterr().err
    assert err.count("xling precision:") == 1 and "no native bf16" in err


def test_cpu_kinds():
    for cpu, kind in ((AVX512_BF16, "avx512_bf16"), (AMX, "amx"), (NO_BF16, "none")):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(precision, "_cpuinfo", lambda cpu=cpu: cpu)
            assert precision.cpu_kind() == kind


def test_auto_follows_the_measurement_per_path_and_caches_it(machine, monkeypatch, capsys):
    # bf16 wins by far on batched paths, loses on one row, ties on training (below BF16_MARGIN: fp32)
    measured = machine(AVX512_BF16, fake_times(train=1.02, decode1=0.7, decode=1.6, encode=2.1))
    assert precision.choose("encode") == "bf16"
    assert precision.choose("train") == "fp32" and precision.autocast_dtype("auto", torch.device("cpu")) is None
    assert precision.resolve_precision("auto", "cpu", rows=1) == torch.float32  # decode1
    assert precision.resolve_precision("auto", "cpu", rows=2) == torch.bfloat16  # decode
    assert precision.resolve_precision("auto", "cpu") == torch.bfloat16  # many rows
    assert measured == [256]  # once for all four paths, at the default width
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Fake EPYC" in err[0] and "AVX512-BF16 without AMX" in err[0]
    assert "encode bf16 (bf16 2.10x fp32)" in err[0] and "measured now" in err[0]

    cache = json.loads((precision._cache_path()).read_text())
    (key, entry), = cache.items()
    assert key == precision.machine_key() and "Fake EPYC" in key and f"torch {torch.__version__}" in key
    assert entry["table"] == {"train": "fp32", "decode1": "fp32", "decode": "bf16", "encode": "bf16"}

    # a new process: read from the cache, not measured again, announced once with where it came from
    monkeypatch.setattr(precision, "_TABLES", {})
    monkeypatch.setattr(precision, "_ANNOUNCED", set())
    assert precision.choose("decode") == "bf16" and precision.choose("decode1") == "fp32"
    assert measured == [256]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cached in" in err[0] and "measured now" not in err[0]

    # another width is another entry (the shapes differ); the model's width rounds to a multiple of 64
    assert precision.choose("encode", width=768) == "bf16" and measured == [256, 768]
    precision.choose("encode", width=770)
    assert measured == [256, 768]


def test_a_different_machine_does_not_reuse_the_cached_table(machine, monkeypatch):
    measured = machine(AVX512_BF16, fake_times(encode=2.0))
    assert precision.choose("encode") == "bf16"
    machine(AMX, fake_times(encode=0.5))
    assert precision.choose("encode") == "fp32"
    monkeypatch.setattr(torch, "get_num_threads", lambda: 97)  # the thread count is part of the key too
    precision.choose("encode")
    assert measured == [256, 256, 256]


def test_the_environment_overrides_all_or_some_paths(machine, monkeypatch, capsys):
    measured = machine(AVX512_BF16, fake_times(train=2, decode1=2, decode=2, encode=2))
    monkeypatch.setenv(precision.ENV_TABLE, "fp32")
    assert [precision.choose(p) for p in precision.PATHS] == ["fp32"] * 4
    assert measured == [] and capsys.readouterr().err == ""  # the user's own choice: nothing measured or printed
    monkeypatch.setenv(precision.ENV_TABLE, "decode1=fp32, encode=fp32")
    assert [precision.choose(p) for p in precision.PATHS] == ["bf16", "fp32", "bf16", "fp32"]
    assert measured == [256] and "sets decode1, encode" in capsys.readouterr().err
    for bad in ("encode=fp16", "serve=bf16", "bf16,fp32"):
        monkeypatch.setenv(precision.ENV_TABLE, bad)
        with pytest.raises(XlingError, match="PATH=fp32"):
            precision.choose("train")


def test_bf16_needs_the_margin():
    assert precision.table_from(fake_times(train=precision.BF16_MARGIN + 1e-6, encode=1.0, decode=0.5)) == {
        "train": "bf16", "decode1": "fp32", "decode": "fp32", "encode": "fp32"}


def test_for_precision_decides_at_the_models_width(machine):
    measured = machine(AVX512_BF16, fake_times(decode=2.0))
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=50, d_model=128))
    assert precision.for_precision(model, "auto", rows=1) is model  # decode1 measured fp32: the model itself
    copy = precision.for_precision(model, "auto", rows=4)
    assert next(copy.parameters()).dtype == torch.bfloat16 and next(model.parameters()).dtype == torch.float32
    assert measured == [128]


def test_the_micro_benchmark_times_every_path_in_both_precisions():
    times = precision.measure(width=64, rounds=1)
    assert set(times) == set(precision.PATHS)
    assert all(set(t) == {"fp32", "bf16"} and all(0 < v < 60 for v in t.values()) for t in times.values())
    assert set(precision.table_from(times).values()) <= {"fp32", "bf16"}


# ---------------------------------------------------------------------------- bf16 sentence encoding

def _model_and_seqs(seed: int, d_model: int = 64):
    torch.manual_seed(seed)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=300, n_langs=3, d_model=d_model, n_layer=2))
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(8, 300, size=int(n)) for n in rng.integers(1, 40, size=40)]
    return model, seqs


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_bf16_encoding_keeps_cosine_to_fp32(seed):
    model, seqs = _model_and_seqs(seed)
    kw = dict(lang_index=1, tag=5, specials=SPECIALS, batch_size=16)
    fp32 = encode(model, seqs, precision="fp32", **kw)
    bf16 = encode(model, seqs, precision="bf16", **kw)
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)  # autocast did run
    cos = (fp32 * bf16).sum(1)  # both L2-normalised
    assert cos.min() >= 0.999, cos.min()
    every = encode(model, seqs, precision="bf16", all_layers=True, **kw)  # every layer, not only the last
    exact = encode(model, seqs, precision="fp32", all_layers=True, **kw)
    assert (exact * every).sum(-1).min() >= 0.999
    np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1.0, rtol=1e-5)


def test_fp32_encoding_is_exact_even_inside_a_callers_bf16_autocast():
    model, seqs = _model_and_seqs(7)
    kw = dict(lang_index=2, tag=6, specials=SPECIALS, batch_size=64)
    fp32 = encode(model, seqs, precision="fp32", **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = encode(model, seqs, precision="fp32", **kw)
    np.testing.assert_array_equal(inside, fp32)
    # the same numbers as running the model by hand in fp32 (one batch, sorted by length as encode does)
    order = np.argsort([len(s) for s in seqs], kind="stable")
    built = [np.concatenate([[6], seqs[i], [2]]) for i in order]
    idx = torch.zeros(len(built), max(map(len, built)), dtype=torch.long)
    real = torch.zeros_like(idx, dtype=torch.bool)
    for r, b in enumerate(built):
        idx[r, :len(b)] = torch.from_numpy(b)
        real[r, :len(b)] = True
    with torch.no_grad():
        h = model.hidden_states(idx, causal=False, lang_ids=torch.full_like(idx, 2), pad_mask=real)[-1]
    want = torch.nn.functional.normalize(mean_pool(h, real), dim=-1).numpy()
    np.testing.assert_allclose(fp32[order], want, atol=1e-6)


def test_auto_encoding_follows_the_encode_path(monkeypatch):
    model, seqs = _model_and_seqs(3)
    kw = dict(lang_index=1, tag=5, specials=SPECIALS)
    native = precision.native_bf16(torch.device("cpu"))
    monkeypatch.setenv(precision.ENV_TABLE, "train=bf16,decode1=bf16,decode=bf16,encode=fp32")
    np.testing.assert_array_equal(encode(model, seqs, **kw), encode(model, seqs, precision="fp32", **kw))
    monkeypatch.setenv(precision.ENV_TABLE, "train=fp32,decode1=fp32,decode=fp32,encode=bf16")
    want = encode(model, seqs, precision="bf16" if native else "fp32", **kw)  # no native bf16: fp32 regardless
    np.testing.assert_array_equal(encode(model, seqs, **kw), want)
