"""Sharded checkpoints of a (FSDP) training module: every process writes and reads only its own part of the weights
and AdamW state through `torch.distributed.checkpoint` (DCP), nothing is gathered to one process, and a checkpoint
written by N processes loads into M. `xling.checkpoint` wraps these files in its step directory (atomic rename,
`latest`, sha256 of every file in meta.json); this module only knows the shard folder:

    rest = save_shards(folder, module, optimizer)       # every rank; returns the optimizer's small non-tensor part
    stateless = load_shards(folder, module, optimizer, rest)   # every rank, whatever the number that saved
    shapes = shard_shapes(folder)                       # {key: full shape}, from the files' headers only
    state = consolidate(folder, ("model.",))            # full tensors in one process, no process group (export)

The files: one safetensors file per writing rank (`shard-<rank+1>-model-00001-of-00001.safetensors`, DCP's
`HuggingFaceStorageWriter` with `save_distributed`). Each holds that rank's piece of every tensor, and its header
says where the piece sits in the full tensor (`DCP_SHARDING_INFO`: key -> saved_offsets). Keys: `model.*` and
`objectives.*` (the TrainModule's weights, as its state_dict names them) and `optimizer.<parameter>.<name>` (AdamW's
exp_avg, exp_avg_sq, step). A tensor every rank holds whole (AdamW's step under FSDP) is written by one rank only.
Loading, DCP plans which pieces of which files each rank's shards overlap, so the number of processes may change.
Memory: a save holds one copy of the rank's own shard (the safetensors file is built in memory), a load reads into
the rank's tensors in place (bench/ckpt_sharded.py: 266 MiB and 2 MiB per rank for a 46M-parameter model + AdamW
on 2 processes, where gathering took 685-713 and 283 MiB on rank 0).

No pickle is read. DCP's default `FileSystemWriter` keeps its metadata in a `.metadata` file that
`FileSystemReader.read_metadata` loads with `pickle.load`: code would run on load, and a sha256 recorded in
meta.json would not make that safe, since meta.json can be rewritten together with the file (tests/test_checkpoint.py
forges both). The safetensors storage has no pickle anywhere: `HuggingFaceStorageReader` rebuilds DCP's metadata from
the files' JSON headers and reads the tensors with safetensors. What is not a tensor (the optimizer's param_groups:
lr, betas, weight decay, parameter names) is returned by `save_shards` for the caller to keep beside the train state
(state.pt, read with `torch.load(weights_only=True)`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import state_dict as dsd
from torch.distributed.checkpoint.api import CheckpointException

from xling.errors import XlingError

try:  # DCP's safetensors storage is newer than the torch floor in pyproject.toml (fully_shard, 2.6)
    from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter
except ImportError:  # pragma: no cover (the tested torch has it)
    raise XlingError(f"sharded checkpoints need torch.distributed.checkpoint's safetensors storage, which torch "
                     f"{torch.__version__} lacks; upgrade torch (`pip install -U torch`) or set "
                     f"train.ckpt_format=full") from None

OPTIM = "optimizer."  # key prefix of the optimizer's tensors
_SHARDED = dsd.StateDictOptions(full_state_dict=False)  # each rank its own DTensor shards (whole tensors unwrapped)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """DCP warns that it assumes one process whenever it runs without a process group: that is meant here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _one_line(e: BaseException) -> str:
    """The message of the first failure of a DCP call (its CheckpointException holds every rank's traceback)."""
    failures = getattr(e, "failures", None)
    if failures:
        e = next(iter(failures.values()))[0]
    return f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


def save_shards(folder: str | Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Write this rank's shards of `module`'s weights and `optimizer`'s tensors into `folder` (every rank calls it;
    a collective under FSDP). Returns the optimizer's non-tensor part and every saved tensor's full shape, the
    same on every rank: {"param_groups": [...], "tensors": {parameter: [state names saved]},
    "other": {parameter: {name: value}}, "shapes": {key: [full shape]}}."""
    model_sd, optim_sd = dsd.get_state_dict(module, optimizer, options=_SHARDED)
    flat: dict[str, torch.Tensor] = dict(model_sd)
    tensors: dict[str, list[str]] = {}
    other: dict[str, dict[str, Any]] = {}
    for fqn, st in optim_sd["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                flat[f"{OPTIM}{fqn}.{name}"] = value
                tensors.setdefault(fqn, []).append(name)
            else:
                other.setdefault(fqn, {})[name] = value
    with _quiet():
        dcp.save(flat, storage_writer=HuggingFaceStorageWriter(str(folder), save_distributed=True),
                 no_dist=not dist.is_initialized())
    return {"param_groups": optim_sd["param_groups"], "tensors": tensors, "other": other,
            "shapes": {k: list(v.shape) for k, v in flat.items()}}  # a DTensor's shape is the full one


def _metadata(folder: Path, shapes: dict[str, list[int]] | None = None):
    """DCP's metadata of the shard folder, rebuilt from the safetensors headers (JSON), and checked: every tensor of
    `shapes` (what `save_shards` returned) is there with that full shape, and its pieces cover it whole. A missing
    shard file would otherwise leave part of a tensor unread, silently: DCP plans reads from the pieces it finds."""
    try:
        md = HuggingFaceStorageReader(str(folder)).read_metadata()
    except Exception as e:  # SafetensorError, a JSON or key error of a damaged header, OSError
        raise XlingError(f"sharded checkpoint {folder} cannot be read ({_one_line(e)})") from None
    if not md.state_dict_metadata:
        raise XlingError(f"sharded checkpoint {folder} holds no shard file")
    for key, shape in (shapes or {}).items():
        have = md.state_dict_metadata.get(key)
        if have is None or list(have.size) != list(shape):
            what = "no piece" if have is None else f"a shape of {tuple(have.size)}"
            raise XlingError(f"sharded checkpoint {folder}: the shards give {key} {what}, not {tuple(shape)}; a shard "
                             f"file is missing or foreign")
    for key, m in md.state_dict_metadata.items():
        covered = sum(math.prod(c.sizes) for c in m.chunks)
        if covered != math.prod(m.size):
            raise XlingError(f"sharded checkpoint {folder}: the shards hold {covered:,} of the {math.prod(m.size):,} "
                             f"values of {key}; a shard file is missing or foreign")
    return md


def shard_shapes(folder: str | Path, shapes: dict[str, list[int]] | None = None) -> dict[str, tuple[int, ...]]:
    """{key: the full tensor's shape} of a shard folder, from its files' headers (no tensor is read), checked
    against the `shapes` written beside it."""
    return {k: tuple(m.size) for k, m in _metadata(Path(folder), shapes).state_dict_metadata.items()}


def _read(state: dict[str, torch.Tensor], folder: Path, single: bool) -> None:
    """Fill `state`'s tensors (plain or DTensor shards) in place from the shard folder."""
    try:
        with _quiet():
            dcp.load(state, storage_reader=HuggingFaceStorageReader(str(folder)), no_dist=single)
    except (CheckpointException, Exception) as e:  # CheckpointException is a BaseException
        raise XlingError(f"sharded checkpoint {folder} cannot be read ({_one_line(e)})") from None


def consolidate(folder: str | Path, prefixes: tuple[str, ...] = ("model.", "objectives."),
                shapes: dict[str, list[int]] | None = None) -> dict[str, torch.Tensor]:
    """The full tensors whose keys start with one of `prefixes`, assembled in this process alone from every rank's
    shards (no process group, also inside a distributed job): what export and the later stages load. Only these
    tensors are read: the model without the optimizer's two moments."""
    folder = Path(folder)
    md = _metadata(folder, shapes)
    state = {k: torch.empty(m.size, dtype=m.properties.dtype) for k, m in md.state_dict_metadata.items()
             if k.startswith(prefixes)}
    _read(state, folder, single=True)
    return state


def load_shards(folder: str | Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                rest: dict[str, Any]) -> list[str]:
    """Load the shard folder into `module` (plain, DDP or FSDP, any number of ranks) and `optimizer`; every rank
    calls it. `rest`: what `save_shards` returned. Returns the names of the trainable parameters that had no
    optimizer state in the checkpoint: torch gives them a placeholder state to load into, for the caller to drop."""
    folder = Path(folder)
    # the templates: this rank's shards of every weight, and of an optimizer state initialised for every parameter
    model_sd, optim_sd = dsd.get_state_dict(module, optimizer, options=_SHARDED)
    flat: dict[str, torch.Tensor] = dict(model_sd)
    for fqn, names in rest["tensors"].items():
        if fqn not in optim_sd["state"]:
            raise XlingError(f"sharded checkpoint {folder} holds optimizer state of {fqn}, which this model does not "
                             f"train; resume with the run's model and objectives")
        for name in names:
            flat[f"{OPTIM}{fqn}.{name}"] = optim_sd["state"][fqn][name]
    _read(flat, folder, single=not dist.is_initialized())
    state = {fqn: {**rest["other"].get(fqn, {}), **{n: flat[f"{OPTIM}{fqn}.{n}"] for n in names}}
             for fqn, names in rest["tensors"].items()}
    dsd.set_model_state_dict(module, {k: flat[k] for k in model_sd},
                             options=dsd.StateDictOptions(full_state_dict=False, strict=True))
    dsd.set_optimizer_state_dict(module, optimizer, {"state": state, "param_groups": rest["param_groups"]},
                                 options=dsd.StateDictOptions(full_state_dict=False, strict=False))
    return [fqn for fqn in optim_sd["state"] if fqn not in rest["tensors"]]
