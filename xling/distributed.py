"""Distributed training helpers: torchrun init, rank helpers, seeding, DDP / FSDP2 wrapping.

One process per device, started by torchrun, which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; without those variables everything here degrades to a single process (rank 0 of 1):

    torchrun --nproc-per-node 2 -m xling pretrain --run runs/demo          # 2 processes on one machine

    info = init_distributed()            # gloo on CPU, nccl on CUDA; sets the CUDA device from LOCAL_RANK
    module = wrap(module, "ddp", info)   # or "fsdp": FSDP2 `fully_shard` per Transformer block, then the root
    if is_main(): print(...)            # log on rank 0 only

Collectives used by the trainer (`all_reduce_sum`, `all_gather_objects`, `broadcast_object`) are no-ops
in a single process, so the training loop has one code path.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from xling.errors import XlingError

DIST_MODES = ("ddp", "fsdp")
DATA_STREAM, TORCH_STREAM = 2, 3  # sub-stream ids of the seed for RngSlot


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0  # this process among all processes
    world_size: int = 1  # processes in all
    local_rank: int = 0  # this process on its machine (= its GPU index)
    device: torch.device = torch.device("cpu")  # where this process computes

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise XlingError(f"environment variable {name}={value!r} is not an integer; torchrun sets it, "
                         f"unset it to run a single process") from None


def init_distributed(device: str = "auto", backend: str | None = None, timeout_s: float = 1800) -> DistInfo:
    """Read torchrun's environment and join the process group (once); a single process without it.

    device: "auto" (CUDA if available, else CPU), "cpu" or "cuda". backend: None = nccl on CUDA, gloo on CPU.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise XlingError("device cuda asked for but torch sees no CUDA device; use device cpu")
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
            raise XlingError("WORLD_SIZE > 1 but MASTER_ADDR/MASTER_PORT are unset; start with torchrun "
                             "(`torchrun --nproc-per-node N -m xling pretrain ...`)")
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        kwargs: dict[str, Any] = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s),
                                **kwargs)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def destroy() -> None:
    """Leave the process group (call once at the end of a distributed run)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def launch_rank() -> int:
    """This process's rank, also before `init_distributed`: the process group's once joined, else torchrun's
    RANK (0 in a plain process). The run directory's lock asks it before training starts: rank 0 writes."""
    return dist.get_rank() if dist.is_initialized() else _env_int("RANK", 0)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def derive_seed(seed: int, *stream: int) -> int:
    """A 63-bit seed for a named sub-stream of `seed` (e.g. (seed, DATA, slot)), the same on every machine."""
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


def seed_everything(seed: int) -> None:
    """Seed torch's CPU and CUDA generators (model init is identical on every rank)."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


class RngSlot:
    """The randomness of one micro-batch position ("slot") of a training step, on whichever rank runs it.

    rng: a numpy Generator for the data (the objective draws languages, segments and masks from it);
    torch_rng(): a context in which torch's global RNG (dropout) is this slot's own stream. Both derive
    from (seed, index) only, so a slot draws the same numbers whatever the number of processes.
    """

    def __init__(self, seed: int, index: int, device: torch.device):
        self.rng = np.random.default_rng([seed, DATA_STREAM, index])
        g = torch.Generator().manual_seed(derive_seed(seed, TORCH_STREAM, index))
        self.cpu_state = g.get_state()
        self.cuda_state = None
        if device.type == "cuda":
            gc = torch.Generator(device=device).manual_seed(derive_seed(seed, TORCH_STREAM, index))
            self.cuda_state = gc.get_state()

    @contextlib.contextmanager
    def torch_rng(self):
        """Run with this slot's torch RNG state as the global one, then keep the advanced state."""
        saved = torch.get_rng_state()
        saved_cuda = torch.cuda.get_rng_state() if self.cuda_state is not None else None
        torch.set_rng_state(self.cpu_state)
        if self.cuda_state is not None:
            torch.cuda.set_rng_state(self.cuda_state)
        try:
            yield
        finally:
            self.cpu_state = torch.get_rng_state()
            torch.set_rng_state(saved)
            if saved_cuda is not None:
                self.cuda_state = torch.cuda.get_rng_state()
                torch.cuda.set_rng_state(saved_cuda)

    def state_dict(self) -> dict:
        return {"numpy": self.rng.bit_generator.state, "torch": self.cpu_state, "cuda": self.cuda_state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["numpy"]
        self.cpu_state = state["torch"]
        if self.cuda_state is not None and state.get("cuda") is not None:
            self.cuda_state = state["cuda"]


# ---------------------------------------------------------------------------- collectives

def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (identity in a single process). Returns it.

    NCCL reduces only CUDA tensors: a CPU tensor makes a round trip through the current GPU.
    """
    if dist.is_initialized():
        if dist.get_backend() == "nccl" and t.device.type != "cuda":
            on_gpu = t.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
            t.copy_(on_gpu.cpu())
        else:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable, our own data only), in rank order; [obj] in a single process."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


# ---------------------------------------------------------------------------- wrapping

def wrap(module: nn.Module, mode: str, info: DistInfo, blocks: list[nn.Module] | None = None,
         find_unused: bool = True) -> nn.Module:
    """Wrap `module` for data-parallel training; returns it unchanged in a single process.

    ddp:  DistributedDataParallel; `find_unused` must be True when some parameters may get no gradient
          in a step (a step runs one objective: the other objectives' heads are then unused).
    fsdp: FSDP2, `fully_shard` on each of `blocks` (the Transformer blocks), then on the root, which holds
          the embeddings, final norm and objective heads. Parameters become DTensors sharded over ranks;
          weights stay fp32 (autocast does the bf16 compute).
    """
    if mode not in DIST_MODES:
        raise XlingError(f"train.dist must be one of {', '.join(DIST_MODES)}, not {mode!r}")
    if not info.distributed:
        return module
    if mode == "ddp":
        ids = [info.device.index] if info.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(info.device.type, (info.world_size,))
    for block in blocks or []:
        fully_shard(block, mesh=mesh)
    fully_shard(module, mesh=mesh)
    return module


def is_fsdp(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper or a torch.compile wrapper (FSDP2 wraps in place)."""
    module = getattr(module, "_orig_mod", module)
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
