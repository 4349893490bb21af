"""Data-parallel training on CPU with 2 gloo processes: DDP and FSDP2 (`fully_shard` per block) give the
loss curve of a single process with the same global batch, save and resume exactly, and validate alike.
FSDP runs write sharded checkpoints (each rank its own shards, no gather), which resume in another number of
processes: 2 -> 1 and 1 -> 2.

Tolerance: the 2-process losses must match the single process (grad_accum 2 = 2 processes x 1) to a
relative 1e-5 and the final weights to 1e-5 absolute; the only difference is the order of the gradient
sum (all-reduce vs accumulation), observed at ~1e-7. A distributed resume is exact (bit for bit), and so are
the weights a sharded checkpoint gives back in one process. Across a change of the number of processes the
continuation's losses are held to the same relative 1e-5 and its weights to 1e-5 absolute, for the same reason
(the gradient of the 2 micro-batches is summed by a reduce-scatter on one side, accumulated on the other);
observed: 0.0, bit for bit, with the default and the avx2 kernels (2 terms, divided by powers of two).
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.conftest import join_gloo
from tests.test_trainer import build_tiny_run, make_trainer
from xling import distributed as xdist
from xling.checkpoint import load_checkpoint, load_model
from xling.errors import XlingError
from xling.files import sha256_file
from xling.shards import Shards

OBJECTIVES = {"clm": 1.0, "mlm": 1.0, "nsp": 1.0}  # nsp owns a head: exercises unused parameters in DDP
KW = dict(objectives=OBJECTIVES, max_steps=6, precision="fp32", batch_size=4, seq_len=32)


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory) -> Path:
    return build_tiny_run(tmp_path_factory.mktemp("dist_run"), chapters=12) / "shards"


def _flip_byte(f: Path, at: int = -10) -> None:
    data = bytearray(f.read_bytes())
    data[at] ^= 0xFF
    f.write_bytes(bytes(data))


def _worker(rank: int, world: int, shards_dir: str, out: str, one_ckpt: str) -> None:
    join_gloo(rank, world, f"{out}/gloo-store")
    info = xdist.init_distributed("cpu")
    results = {}
    for mode in ("ddp", "fsdp"):
        run = Path(out) / mode
        tr = make_trainer(Shards(shards_dir), run, info=info, dist=mode, grad_accum=1, **KW)
        losses = [tr.step()["loss"] for _ in range(3)]
        tr.save()  # FSDP: sharded, each rank writes its own part
        at_save, _ = tr.state_dicts()  # the same weights gathered to rank 0, to compare the sharded files with
        losses += [tr.step()["loss"] for _ in range(2)]
        bpc = tr.evaluate()
        weights, _ = tr.state_dicts()  # full on rank 0 (a collective under FSDP)
        # resume into a model built from another init: every weight, RNG and data position must come back
        tr2 = make_trainer(Shards(shards_dir), run, info=info, init_seed=99, dist=mode, grad_accum=1, **KW)
        tr2.load(run / "checkpoints")
        resumed = [tr2.step()["loss"] for _ in range(2)]
        weights2, _ = tr2.state_dicts()
        results[mode] = {"losses": losses, "resumed": resumed, "bpc": bpc, "weights": weights,
                         "weights_resumed": weights2, "fsdp": xdist.is_fsdp(tr.wrapped), "at_save": at_save}
    # 1 -> 2: the sharded checkpoint one process wrote (fixture `single_process`), resumed in two
    tr = make_trainer(Shards(shards_dir), Path(out) / "from_one", info=info, init_seed=99, dist="fsdp",
                      grad_accum=1, **KW)
    tr.load(one_ckpt)
    results["from_one"] = {"losses": [tr.step()["loss"] for _ in range(2)], "weights": tr.state_dicts()[0]}
    # a tampered shard: rank 1 checks this file (each rank hashes its share), and both ranks get its error
    bad = Path(out) / "tampered"
    if rank == 0:
        shutil.copytree(Path(out) / "fsdp" / "checkpoints", bad)
        _flip_byte(bad / "step_00000003" / "dcp" / "shard-00001-model-00001-of-00001.safetensors")
    xdist.barrier()
    try:
        tr.load(bad)
        error = None
    except XlingError as e:
        error = str(e)
    results["tampered"] = xdist.all_gather_objects(error)
    if rank == 0:
        torch.save(results, Path(out) / "results.pt")
    xdist.destroy()


@pytest.fixture(scope="module")
def two_process_results(shards_dir, single_process, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("dist_out")
    mp.spawn(_worker, args=(2, str(shards_dir), str(out), str(single_process["ckpt"])), nprocs=2, join=True)
    return {**torch.load(out / "results.pt", weights_only=True), "out": out}


@pytest.fixture
def torch_one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def single_process(shards_dir, tmp_path_factory) -> dict:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tmp_path_factory.mktemp("one_proc")
        # same global batch: 1 x 2 micro-batches; an FSDP config, unwrapped in one process, saves sharded too
        tr = make_trainer(Shards(shards_dir), run, dist="fsdp", grad_accum=2, **KW)
        losses = [tr.step()["loss"] for _ in range(3)]
        tr.save()
        losses += [tr.step()["loss"] for _ in range(2)]
        return {"losses": losses, "bpc": tr.evaluate(), "weights": tr.module.state_dict(),
                "ckpt": run / "checkpoints"}
    finally:
        torch.set_num_threads(n)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one_with_the_same_global_batch(mode, two_process_results, single_process):
    got = two_process_results[mode]
    assert got["fsdp"] == (mode == "fsdp")  # FSDP2 fully_shard works on CPU with gloo
    assert got["losses"] == pytest.approx(single_process["losses"], rel=1e-5)
    ref = single_process["weights"]
    assert got["weights"].keys() == ref.keys()
    for k, v in ref.items():
        torch.testing.assert_close(got["weights"][k], v, rtol=0, atol=1e-5)
    for k, v in single_process["bpc"].items():  # validation: same loss per language and bits per char
        assert got["bpc"][k] == pytest.approx(v, rel=1e-4), k


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_distributed_resume_is_exact(mode, two_process_results):
    got = two_process_results[mode]
    assert got["resumed"] == got["losses"][3:]
    assert all(torch.equal(got["weights_resumed"][k], v) for k, v in got["weights"].items())


def test_single_process_helpers(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = xdist.init_distributed("cpu")
    assert (info.rank, info.world_size, info.is_main, info.distributed) == (0, 1, True, False)
    m = torch.nn.Linear(2, 2)
    assert xdist.wrap(m, "fsdp", info) is m and xdist.unwrap(m) is m
    assert xdist.all_gather_objects({"a": 1}) == [{"a": 1}] and xdist.broadcast_object(3) == 3
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(xdist.all_reduce_sum(t), torch.tensor([1.0, 2.0]))
    seeds = {xdist.derive_seed(0, 2, s) for s in range(100)}
    assert len(seeds) == 100 and xdist.derive_seed(0, 2, 5) == xdist.derive_seed(0, 2, 5)
    assert all(0 <= s < 2**63 for s in seeds)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(XlingError, match="start with torchrun"):
        xdist.init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(XlingError, match="WORLD_SIZE='two' is not an integer"):
        xdist.init_distributed("cpu")


# ---------------------------------------------------------------------------- sharded checkpoints (FSDP)

def test_fsdp_checkpoint_is_sharded_and_gives_the_full_weights_back(two_process_results, single_process):
    """Each rank wrote its own shard file and nobody the full weights; one process assembles them from the shards
    (`load_model`, what export and every later stage use), bit for bit the weights gathered at the save."""
    step_dir = two_process_results["out"] / "fsdp" / "checkpoints" / "step_00000003"
    meta = json.loads((step_dir / "meta.json").read_text())
    assert (meta["format"], meta["processes"]) == ("sharded", 2)
    assert sorted(p.name for p in (step_dir / "dcp").iterdir()) == [
        "shard-00001-model-00001-of-00001.safetensors", "shard-00002-model-00001-of-00001.safetensors"]
    assert not (step_dir / "model.safetensors").exists() and set(meta["files"]) == {
        "config.json", "state.pt", "dcp/shard-00001-model-00001-of-00001.safetensors",
        "dcp/shard-00002-model-00001-of-00001.safetensors"}
    ref = two_process_results["fsdp"]["at_save"]  # TrainModule keys: model.*, objectives.*
    ckpt = load_checkpoint(step_dir, train_state=False)  # what load_model builds its Transformer from
    got = {**{f"model.{k}": v for k, v in ckpt.model_state.items()},
           **{f"objectives.{k}": v for k, v in ckpt.heads_state.items()}}
    assert got.keys() == ref.keys() and ckpt.heads_state
    assert all(torch.equal(v, ref[k]) for k, v in got.items())
    one = json.loads((single_process["ckpt"] / "step_00000003" / "meta.json").read_text())
    assert (one["format"], one["processes"]) == ("sharded", 1)


@pytest.mark.parametrize("direction", ["2->1", "1->2"])
def test_fsdp_checkpoint_resumes_in_another_number_of_processes(direction, shards_dir, two_process_results,
                                                                single_process, monkeypatch, torch_one_thread):
    """Saved at step 3 by N processes, resumed by M (processes x grad_accum kept at 2): the next steps' losses and
    the weights after them are those of the run that went on without stopping."""
    if direction == "2->1":
        def refuse(*a, **k):  # a sharded checkpoint reads no pickle (state.pt goes through weights_only)
            raise AssertionError("pickle.load called while loading a sharded checkpoint")

        monkeypatch.setattr(pickle, "load", refuse)
        monkeypatch.setattr(pickle, "loads", refuse)
        tr = make_trainer(Shards(shards_dir), init_seed=99, dist="fsdp", grad_accum=2, **KW)
        assert tr.load(two_process_results["out"] / "fsdp" / "checkpoints") == 3
        losses = [tr.step()["loss"] for _ in range(2)]
        weights = tr.module.state_dict()
        ref_losses, ref_weights = two_process_results["fsdp"]["losses"][3:], two_process_results["fsdp"]["weights"]
    else:
        losses, weights = two_process_results["from_one"]["losses"], two_process_results["from_one"]["weights"]
        ref_losses, ref_weights = single_process["losses"][3:], single_process["weights"]
    print(direction, "next-step loss abs diff", [abs(a - b) for a, b in zip(losses, ref_losses, strict=True)],
          "max weight diff", max(float((weights[k] - v).abs().max()) for k, v in ref_weights.items()))
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    assert weights.keys() == ref_weights.keys()
    for k, v in ref_weights.items():
        torch.testing.assert_close(weights[k], v, rtol=0, atol=1e-5)


def test_a_tampered_shard_is_one_error_on_every_rank(two_process_results):
    errors = two_process_results["tampered"]
    assert errors[0] == errors[1] and "\n" not in errors[0]  # rank 1 found it, rank 0 raised the same line
    assert re.search(r"checkpoint file \S+/dcp/shard-00001-model-00001-of-00001.safetensors is corrupt "
                     r"\(sha256 differs from meta.json\); no other checkpoint is left", errors[0])


@pytest.mark.parametrize("damage, message", [
    ("flip", r"dcp/shard-00002-model-00001-of-00001.safetensors is corrupt \(sha256 differs"),
    ("delete", r"incomplete: dcp/shard-00001-model-00001-of-00001.safetensors is missing"),
    ("forged", r"cannot be read \(SafetensorError"),  # junk with a matching meta.json: still one line
    ("extra", r"holds dcp/extra.safetensors, which its meta.json does not list; remove it"),
    # a shard and its line in meta.json both gone: what is left holds the front or the back of the tensors
    ("dropped", r"the shards give model\.\S+ a shape of \(\d+, \d+\), not \(\d+, \d+\); a shard file is missing"),
    ("dropped-first", r"the shards hold [\d,]+ of the [\d,]+ values of model\.\S+; a shard file is missing"),
])
def test_a_damaged_sharded_checkpoint_is_one_clear_error(damage, message, two_process_results, tmp_path,
                                                         shards_dir, torch_one_thread):
    root = tmp_path / "checkpoints"
    shutil.copytree(two_process_results["out"] / "fsdp" / "checkpoints", root)
    step_dir = root / "step_00000003"
    meta = json.loads((step_dir / "meta.json").read_text())
    first = damage in ("delete", "dropped-first")
    shard = step_dir / "dcp" / f"shard-0000{1 if first else 2}-model-00001-of-00001.safetensors"
    if damage == "flip":
        _flip_byte(shard)
    elif damage == "delete":
        shard.unlink()
    elif damage == "forged":
        shard.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}    ")
        meta["files"][f"dcp/{shard.name}"] = {"bytes": shard.stat().st_size, "sha256": sha256_file(shard)}
    elif damage == "extra":  # DCP reads every safetensors file in the folder
        shutil.copy(shard, shard.with_name("extra.safetensors"))
    else:
        shard.unlink()
        del meta["files"][f"dcp/{shard.name}"]
        if damage == "dropped-first":  # and the shapes: only the pieces' coverage tells
            del meta["shapes"]
    (step_dir / "meta.json").write_text(json.dumps(meta))
    for load in (lambda: load_model(root),
                 lambda: make_trainer(Shards(shards_dir), dist="fsdp", grad_accum=2, **KW).load(root)):
        with pytest.raises(XlingError, match=message) as e:
            load()
        assert "\n" not in str(e.value)


def test_resuming_with_another_global_batch_layout_names_the_grad_accum(two_process_results, shards_dir,
                                                                        torch_one_thread):
    tr = make_trainer(Shards(shards_dir), dist="fsdp", grad_accum=1, **KW)  # 1 x 1 micro-batches, saved 2 x 1
    with pytest.raises(XlingError, match=r"keep the global batch layout to resume \(train.grad_accum=2 with 1 "):
        tr.load(two_process_results["out"] / "fsdp" / "checkpoints")


def test_later_stages_read_a_sharded_checkpoint_as_a_full_one(shards_dir, tmp_path, torch_one_thread):
    """`load_run` (what export, evaluate and every task load through) gives the same model from either format."""
    import dataclasses

    from xling.checkpoint import load_run

    for fmt in ("sharded", "full"):
        run = tmp_path / fmt
        shutil.copytree(shards_dir.parent / "tokenizer", run / "tokenizer")
        tr = make_trainer(Shards(shards_dir), run, dist="fsdp", ckpt_format="auto" if fmt == "sharded" else "full",
                          **KW)
        tr.config = {"model": dataclasses.asdict(tr.model.cfg), "train": dataclasses.asdict(tr.cfg)}
        tr.tokenizer_sha256 = Shards(shards_dir).tokenizer_sha256
        tr.step()
        tr.save()
        assert (run / "checkpoints" / "step_00000001" / "dcp").is_dir() == (fmt == "sharded")
        got, ref = load_run(run)[0].state_dict(), tr.model.state_dict()
        assert got.keys() == ref.keys() and all(torch.equal(got[k], v) for k, v in ref.items())


def test_a_failed_sharded_save_leaves_nothing_half_written(tmp_path, torch_one_thread):
    from xling.checkpoint import save_training
    from xling.model import ModelConfig, Transformer
    from xling.trainer import TrainModule

    module = TrainModule(Transformer(ModelConfig.preset("tiny", vocab_size=50, n_langs=0)), {})
    opt = torch.optim.AdamW(module.parameters())
    kw = dict(config={}, tokenizer_sha256="", keep=0, sharded=True)
    save_training(tmp_path, 1, module, opt, {"step": 1}, **kw)

    class NotAState:  # torch.save pickles it, then the write breaks midway
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_training(tmp_path, 2, module, opt, {"step": 2, "x": NotAState()}, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_00000001"]  # no temporary dir left
    assert load_checkpoint(tmp_path).step == 1
