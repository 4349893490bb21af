"""Checkpoints: exact round trip, `latest` + keep-K, atomic writes, and one XlingError for every corrupt,
truncated, foreign or mismatched checkpoint (never an unpickled foreign object)."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from xling.checkpoint import (
    check_compatible,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model,
    remove_orphans,
    save_checkpoint,
)
from xling.errors import XlingError
from xling.files import sha256_file
from xling.model import ModelConfig, Transformer

CFG = ModelConfig.preset("tiny", vocab_size=300, n_langs=3)


def _save(root, step: int, model: Transformer | None = None, **kw):
    model = model or Transformer(CFG)
    rng = np.random.default_rng(7)
    rng.random(3)
    state = {"step": step, "rng": rng.bit_generator.state, "torch": torch.get_rng_state(),
             "optimizer": {"state": {"wte.weight": {"exp_avg": torch.ones(2, 3)}}, "param_groups": [
                 {"lr": 1e-3, "betas": (0.9, 0.95), "params": ["wte.weight"]}]}}
    return save_checkpoint(root, step, model_state=model.state_dict(),
                           heads_state={"nsp.head.weight": torch.ones(2, 32)}, train_state=state,
                           config={"model": dataclasses.asdict(CFG)}, tokenizer_sha256="ab" * 32, **kw)


def test_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = Transformer(CFG)
    path = _save(tmp_path, 5, model)
    assert path.name == "step_00000005" and (tmp_path / "latest").read_text().strip() == path.name
    ck = load_checkpoint(tmp_path)
    assert ck.step == 5 and ck.path == path
    ref = model.state_dict()
    assert ck.model_state.keys() == ref.keys() and all(torch.equal(ck.model_state[k], ref[k]) for k in ref)
    assert torch.equal(ck.heads_state["nsp.head.weight"], torch.ones(2, 32))
    rng = np.random.default_rng(0)
    rng.bit_generator.state = ck.train_state["rng"]  # the numpy stream continues where it was saved
    ref_rng = np.random.default_rng(7)
    ref_rng.random(3)
    assert rng.random() == ref_rng.random()
    assert torch.equal(ck.train_state["torch"], torch.get_rng_state())
    assert ck.train_state["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.95)
    assert ck.meta["tokenizer_sha256"] == "ab" * 32
    loaded, cfg, meta = load_model(tmp_path)  # the helper later stages use
    assert cfg == CFG and not loaded.training
    assert all(torch.equal(loaded.state_dict()[k], ref[k]) for k in ref)


def test_latest_and_keep_k(tmp_path):
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003", "step_00000004"]
    assert find_checkpoint(tmp_path).name == "step_00000004"
    assert find_checkpoint(tmp_path / "step_00000003").name == "step_00000003"
    (tmp_path / ".step_00000005.abc.tmp").mkdir()  # what a killed save leaves: ignored
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003", "step_00000004"]
    (tmp_path / "latest").write_text("step_00000009\n")
    with pytest.raises(XlingError, match="names step_00000009, which is missing"):
        find_checkpoint(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(XlingError, match="no checkpoint in"):
        find_checkpoint(tmp_path / "empty")


def test_orphans_of_killed_saves_are_removed_and_a_lone_old_copy_kept(tmp_path):
    _save(tmp_path, 3)
    orphans = [".step_00000004.k2j1.tmp", ".step_00000005.x9.tmp", ".step_00000003.old"]
    for name in orphans:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"partial")
    (tmp_path / ".step_00000002.old").mkdir()  # killed between the two renames: the only copy of step 2
    assert remove_orphans(tmp_path) == sorted(orphans)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".step_00000002.old", "latest", "step_00000003"]
    assert remove_orphans(tmp_path) == [] and remove_orphans(tmp_path / "missing") == []


def test_a_failed_save_leaves_nothing_half_written(tmp_path):
    _save(tmp_path, 1)

    class NotAState:  # torch.save pickles it, then we break the write midway
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(tmp_path, 2, model_state=Transformer(CFG).state_dict(), train_state={"x": NotAState()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_00000001"]  # no temp dir left
    assert find_checkpoint(tmp_path).name == "step_00000001"


@pytest.mark.parametrize("damage, message", [
    ("truncate", "truncated or altered"),
    ("flip", "corrupt \\(sha256 differs"),
    ("delete", "incomplete: state.pt is missing"),
    ("meta", "meta.json is unreadable"),
])
def test_damaged_checkpoint_is_one_clear_error(tmp_path, damage, message):
    _save(tmp_path, 2)
    path = _save(tmp_path, 3)
    if damage == "truncate":
        f = path / "model.safetensors"
        f.write_bytes(f.read_bytes()[:-100])
    elif damage == "flip":
        f = path / "model.safetensors"
        data = bytearray(f.read_bytes())
        data[-10] ^= 0xFF
        f.write_bytes(bytes(data))
    elif damage == "delete":
        (path / "state.pt").unlink()
    else:
        (path / "meta.json").write_text("{not json")
    with pytest.raises(XlingError, match=message) as e:
        load_checkpoint(tmp_path)
    # the fix the message gives is one the user can run (it said "resume from another checkpoint", which no
    # command has an option for; issue 21): point `latest` at the earlier checkpoint
    fix = re.search(r"`echo (step_\d+) > (\S+)`", str(e.value))
    assert fix and "resume from" not in str(e.value)
    Path(fix.group(2)).write_text(fix.group(1) + "\n")
    assert load_checkpoint(tmp_path).step == 2
    (tmp_path / "latest").write_bytes(b"\xff\xfe")  # not UTF-8: the same kind of fix, not a traceback
    with pytest.raises(XlingError, match=r"latest does not hold a step directory's name.*`echo step_00000003 > "):
        find_checkpoint(tmp_path)
    (tmp_path / "latest").write_text("step_00000009\n")
    with pytest.raises(XlingError, match=r"latest names step_00000009, which is missing"):
        find_checkpoint(tmp_path)


class _Payload:
    def __reduce__(self):
        return (print, ("PWNED",))  # what a malicious pickle would run


def test_a_foreign_pickle_is_refused_not_run(tmp_path, capsys):
    path = _save(tmp_path, 3)
    f = path / "state.pt"
    f.write_bytes(pickle.dumps({"step": _Payload()}, protocol=2))
    meta = json.loads((path / "meta.json").read_text())
    meta["files"]["state.pt"] = {"bytes": f.stat().st_size, "sha256": sha256_file(f)}  # even with a forged meta
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(XlingError, match="holds objects xling does not write; refusing to unpickle it"):
        load_checkpoint(tmp_path)
    assert "PWNED" not in capsys.readouterr().out


def test_mismatched_model_or_tokenizer_is_one_clear_error(tmp_path):
    _save(tmp_path, 1)
    ck = load_checkpoint(tmp_path)
    check_compatible(ck, dataclasses.asdict(CFG), "ab" * 32, Transformer(CFG).state_dict())  # fits
    other = dataclasses.replace(CFG, d_model=64)
    with pytest.raises(XlingError, match=r"another model shape \(d_model=32 there, 64 here\)"):
        check_compatible(ck, dataclasses.asdict(other))
    with pytest.raises(XlingError, match="tokenizer sha256 ababababab"):
        check_compatible(ck, dataclasses.asdict(CFG), "cd" * 32)
    bigger = Transformer(dataclasses.replace(CFG, vocab_size=301)).state_dict()
    with pytest.raises(XlingError, match=r"wte.weight has shape \(300, 32\), this model \(301, 32\)"):
        check_compatible(ck, {}, None, bigger)
