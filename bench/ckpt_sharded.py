"""FSDP checkpoints, gathered to rank 0 (the full format) vs sharded (each rank its own part): save and load time and
each rank's peak memory, with 2 gloo processes on the CPU.

    .venv/bin/python bench/ckpt_sharded.py                       # a ~46M-parameter model (d 512, 12 layers)
    .venv/bin/python bench/ckpt_sharded.py --d-model 256 --layers 4

Model: a Transformer (llama family, vocab 16,000, tied embeddings) wrapped as the trainer wraps it (FSDP2
`fully_shard` per block, then the root), with AdamW state for every weight (initialised by DCP's zero step, so the
optimizer holds its two moments as after a training step). Each save and each load runs in 2 fresh processes
(`mp.spawn`), so none inherits another's allocator state: `save_training`, then `load_training` of that checkpoint
into a newly built module, each timed on every rank and wrapped in two peak memory samplers (every 2 ms; the
growth over the start of the call): anonymous memory (what the process allocated), and the whole resident set,
which also counts the pages of a file read through mmap (safetensors; page cache the kernel may drop).
  full      the peer: every weight and moment gathered to rank 0, which writes model.safetensors + state.pt and, on
            load, reads them whole and broadcasts them
  sharded   `train.ckpt_format = "sharded"`: each rank writes and reads its own shard file (xling.sharded)
The checkpoint goes to a temporary folder on local disk; the last line is machine-readable name=value pairs.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_memory.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _memory import PeakRSS  # noqa: E402


def _worker(rank: int, world: int, port: int, fmt: str, phase: str, args: argparse.Namespace, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from torch.distributed.checkpoint import state_dict as dsd

    from xling import distributed as xdist
    from xling.checkpoint import load_training, save_training
    from xling.model import ModelConfig, Transformer
    from xling.train_config import adamw
    from xling.trainer import TrainModule

    info = xdist.init_distributed("cpu")
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=16000, n_langs=0, n_layer=args.layers, d_model=args.d_model,
                      n_head=args.d_model // 64, block_size=512)
    model = Transformer(cfg)
    n_params = model.num_params()
    module = xdist.wrap(TrainModule(model, {}), "fsdp", info, blocks=list(model.blocks))
    opt = adamw(list(module.parameters()), info.device, weight_decay=0.1, lr=1e-3)
    dsd.get_optimizer_state_dict(module, opt)  # AdamW's moments exist from here on, on every rank (no gather)
    root = Path(out) / fmt / "checkpoints"
    xdist.barrier()
    with PeakRSS(anonymous=True) as mem, PeakRSS() as rss:
        t0 = time.perf_counter()
        if phase == "save":
            save_training(root, 1, module, opt, {"step": 1}, config={}, tokenizer_sha256="", keep=0,
                          sharded=fmt == "sharded")
        else:
            load_training(root, module, opt, model_cfg={}, tokenizer_sha256="")
        seconds = time.perf_counter() - t0
    rows = xdist.all_gather_objects((seconds, mem.mb, rss.mb))
    if rank == 0:
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        torch.save({"rows": rows, "params": n_params, "bytes": size}, Path(out) / f"{fmt}_{phase}.pt")
    xdist.destroy()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    from xling.progress import format_table

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--layers", type=int, default=12)
    args = ap.parse_args()
    os.environ.setdefault("XLING_PROGRESS", "0")
    rows, kv = [], {}
    with tempfile.TemporaryDirectory() as out:
        for fmt in ("full", "sharded"):  # the peer first
            res = {}
            for phase in ("save", "load"):
                mp.spawn(_worker, args=(2, _free_port(), fmt, phase, args, out), nprocs=2, join=True)
                res[phase] = torch.load(Path(out) / f"{fmt}_{phase}.pt", weights_only=True)
            for rank in range(2):
                (t_save, m_save, r_save), (t_load, m_load, r_load) = (res[p]["rows"][rank] for p in ("save", "load"))
                rows.append([fmt, rank, round(t_save, 2), round(m_save), round(r_save), round(t_load, 2),
                             round(m_load), round(r_load)])
                kv.update({f"{fmt}_r{rank}_save_s": round(t_save, 2), f"{fmt}_r{rank}_save_mib": round(m_save),
                           f"{fmt}_r{rank}_save_rss_mib": round(r_save), f"{fmt}_r{rank}_load_s": round(t_load, 2),
                           f"{fmt}_r{rank}_load_mib": round(m_load), f"{fmt}_r{rank}_load_rss_mib": round(r_load)})
            kv[f"{fmt}_mib_on_disk"] = round(res["save"]["bytes"] / 2**20)
            params = res["save"]["params"]
    print(format_table(["format", "rank", "save s", "save MiB", "save RSS MiB", "load s", "load MiB",
                        "load RSS MiB"], rows,
                       title=f"{params / 1e6:.1f}M parameters + AdamW (fp32: {params * 12 / 2**20:,.0f} MiB of "
                             f"weights and moments), 2 gloo processes, 1 thread each"))
    print("rank 0 peak anonymous memory, full vs sharded: " + ", ".join(
        f"{p} {kv[f'full_r0_{p}_mib']} vs {kv[f'sharded_r0_{p}_mib']} MiB" for p in ("save", "load")))
    print(" ".join(f"{k}={v}" for k, v in {"params": params, **kv}.items()))


if __name__ == "__main__":
    main()
