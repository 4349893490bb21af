"""The trainer's side of a checkpoint: what one step's state is, how it is saved, and how a run resumes it exactly.

    trainer.save()                              # <run>/checkpoints/step_N (every rank calls; rank 0 writes, or
                                                # each rank its shards: train.ckpt_format)
    step = trainer.load("runs/demo/checkpoints")  # weights, optimizer, RNG and data position; metrics.jsonl trimmed

The state beside the weights: step, tokens, elapsed time, skipped steps, where the cosine starts, the objective
generator and every slot's generators (all ranks' slots, so a run resumes with the same global batch layout),
and the objectives trained. The files and their checks are `xling.checkpoint`'s. A sharded checkpoint resumes in
another number of processes when processes x grad_accum stays: each rank takes back the slots it now runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from xling import distributed as xdist
from xling.checkpoint import load_training, save_training
from xling.errors import XlingError
from xling.files import atomic_write_bytes
from xling.train_config import sharded_checkpoints


class Resumable:
    """Checkpointing for `xling.trainer.Trainer` (a mixin: it reads and restores the trainer's own attributes).

    Uses: run_dir, info, cfg, config, tokenizer_sha256, model, wrapped, optimizer, names, slots, n_slots, obj_rng,
    step_no, tokens, elapsed, skipped, warmup_frac, last_valid, _last_saved, _carry.
    """

    def state_dicts(self) -> tuple[dict, dict]:
        """(full module state, full optimizer state), gathered on rank 0 (collective under FSDP)."""
        from torch.distributed.checkpoint import state_dict as dsd

        opts = dsd.StateDictOptions(full_state_dict=True, cpu_offload=True)
        return (dsd.get_model_state_dict(self.wrapped, options=opts),
                dsd.get_optimizer_state_dict(self.wrapped, self.optimizer, options=opts))

    def save(self) -> Path | None:
        """Checkpoint the current step under <run>/checkpoints (every rank calls; rank 0 writes, or every rank its
        shards of an FSDP model: `train_config.sharded_checkpoints`)."""
        if self.run_dir is None:
            return None
        t0 = time.perf_counter()
        slots = [s for part in xdist.all_gather_objects([s.state_dict() for s in self.slots]) for s in part]
        state = {"step": self.step_no, "tokens": self.tokens, "elapsed": self.elapsed, "skipped": self.skipped,
                 "warmup_frac": self.warmup_frac, "objective_rng": self.obj_rng.bit_generator.state,
                 "slots": slots, "objectives": list(self.names),
                 "layout": {"slots": self.n_slots, "batch_size": self.cfg.batch_size}}
        path = save_training(self.run_dir / "checkpoints", self.step_no, self.wrapped, self.optimizer, state,
                             config=self.config, tokenizer_sha256=self.tokenizer_sha256,
                             keep=self.cfg.keep_checkpoints, sharded=sharded_checkpoints(self.cfg))
        self._last_saved = self.step_no
        self._carry += time.perf_counter() - t0
        return path

    def load(self, path: str | Path) -> int:
        """Resume from a checkpoint (a step dir or checkpoints/): weights, optimizer, RNG, data position."""
        state = load_training(path, self.wrapped, self.optimizer, model_cfg=self.config.get("model", {}),
                              tokenizer_sha256=self.tokenizer_sha256, check=self._check_state,
                              model_state=self.model.state_dict())  # under FSDP: DTensors, of full shape
        self.step_no, self.tokens = int(state["step"]), int(state["tokens"])
        self.elapsed, self.skipped = float(state["elapsed"]), int(state["skipped"])
        self.warmup_frac = state["warmup_frac"]
        self.obj_rng.bit_generator.state = state["objective_rng"]
        first = self.info.rank * self.cfg.grad_accum
        for i, slot in enumerate(self.slots):
            slot.load_state_dict(state["slots"][first + i])
        self._last_saved = self.step_no
        if self.run_dir is not None and self.info.is_main:
            self._truncate_metrics(self.step_no)
        xdist.barrier()
        return self.step_no

    def _check_state(self, ckpt) -> None:
        st = ckpt.train_state
        try:
            layout, names = st["layout"], st["objectives"]
        except (KeyError, TypeError):
            raise XlingError(f"checkpoint {ckpt.path} has no training state; it cannot be resumed") from None
        if sorted(names) != sorted(self.names):
            raise XlingError(f"checkpoint {ckpt.path} trained objectives {', '.join(names)}, the config has "
                             f"{', '.join(self.names)}; resume with the same train.objectives or start a new run")
        if layout["slots"] != self.n_slots or layout["batch_size"] != self.cfg.batch_size:
            # another number of processes is fine when processes x grad_accum stays: every slot's data and dropout
            # streams are saved by slot, and each rank takes back the slots it now runs
            world = self.info.world_size
            fix = f"train.grad_accum={layout['slots'] // world} with {world} process(es)" \
                if layout["slots"] % world == 0 and layout["batch_size"] == self.cfg.batch_size else \
                f"train.batch_size={layout['batch_size']} and processes x train.grad_accum = {layout['slots']}"
            raise XlingError(f"checkpoint {ckpt.path} was trained with {layout['slots']} micro-batches of "
                             f"{layout['batch_size']} per step (processes x grad_accum); this run has "
                             f"{self.n_slots} of {self.cfg.batch_size}: keep the global batch layout to resume "
                             f"({fix})")

    def _truncate_metrics(self, step: int) -> None:
        """Keep only the metrics lines of steps <= `step` (the checkpoint resumed from): the killed run's later
        lines are re-trained and would be written twice, and a line torn by `kill -9` (no newline, or not
        JSON) is dropped. Rewritten atomically. The checkpoint step's validation line, when kept, restores
        `last_valid`, so resuming a finished run does not validate (and log) that step a second time."""
        path = self.run_dir / "train" / "metrics.jsonl"
        if not path.is_file():
            return
        keep = []
        for raw in path.read_bytes().splitlines(keepends=True):
            try:
                line = json.loads(raw) if raw.endswith(b"\n") else None
            except ValueError:  # JSONDecodeError and UnicodeDecodeError: a torn write
                line = None
            if isinstance(line, dict) and isinstance(line.get("step"), int) and line["step"] <= step:
                keep.append(raw)
                if line.get("kind") == "valid" and line["step"] == step:
                    self.last_valid = {k: v for k, v in line.items() if k.startswith("valid/")}
        atomic_write_bytes(path, b"".join(keep))
