"""Checkpoints: written atomically, verified on load, enough state for an exact resume.

    path = save_checkpoint(root, step, model_state=..., heads_state=..., train_state=..., config=...,
                           tokenizer_sha256=sha, keep=3)
    ckpt = load_checkpoint(root)                 # the `latest` one, or give a step directory
    check_compatible(ckpt, model_cfg, sha)       # one XlingError for another shape or tokenizer
    model, cfg, meta = load_model("runs/demo/checkpoints")   # the trained Transformer, for later stages
    model, tok = load_run("runs/demo")           # the Transformer + the run's tokenizer (checked to match)
    save_training(...) / load_training(...)      # a trainer's (DDP/FSDP-wrapped) module + optimizer
    save_training(..., sharded=True)             # each rank writes its own shards (FSDP runs: no gather)

On disk (`<run>/checkpoints/`), the full format (single-process and DDP runs; the format of export):

    step_00000100/
        model.safetensors   the Transformer's weights (fp32), keys as in `Transformer.state_dict()`
        heads.safetensors   parameters the objectives own (e.g. the NSP head), keys "<objective>.<name>"
        state.pt            optimizer, schedule, step/tokens/time, RNG and data-stream state:
                            torch.save of plain containers and tensors, read back with weights_only=True
        config.json         {"model": ModelConfig fields, "train": TrainConfig fields, "run": the whole config}
        meta.json           step, tokenizer sha256, xling version, bytes and sha256 of every file above
    latest                  the name of the newest complete checkpoint (replaced atomically)

The sharded format (FSDP runs, `train.ckpt_format`): no process holds the whole model or optimizer, so each writes
its own part (`xling.sharded`: torch.distributed.checkpoint into safetensors files, no pickle):

    step_00000100/
        dcp/shard-0000R-model-00001-of-00001.safetensors   rank R-1's pieces of the weights (`model.*`,
                            `objectives.*`) and of AdamW's tensors (`optimizer.<parameter>.<name>`), with
                            their offsets in the full tensors
        state.pt            as above, with the optimizer's non-tensor part (param_groups) only
        config.json, meta.json (format "sharded", the number of processes that wrote it, every file's sha256,
                            every saved tensor's full shape)

It resumes in any number of processes (DCP reads the pieces each rank's new shards overlap; the global batch
layout must stay: processes x train.grad_accum). `load_checkpoint` and `load_model` assemble the full weights
in one process (without the optimizer), so export and every later stage read either format.

A checkpoint directory is built under a temporary name and renamed into place, then `latest` is
rewritten, then all but the newest `keep` are removed: a killed process leaves either the old or the
new checkpoint, never half of one. Weights are loaded with `safetensors`; `state.pt` only with
`torch.load(weights_only=True)`, so no arbitrary pickle is ever executed. A missing, truncated or altered
file fails the size/sha256 check in meta.json with one XlingError naming the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pickle
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from xling import __version__
from xling.errors import XlingError
from xling.files import atomic_dir, atomic_write_json, atomic_write_text, sha256_file

if TYPE_CHECKING:
    from tokenizers import Tokenizer

LATEST = "latest"
STEP_DIR = re.compile(r"^step_(\d+)$")
FILES = ("model.safetensors", "heads.safetensors", "state.pt", "config.json")
SHARDS = "dcp"  # the shard folder of a sharded checkpoint
SHARDED = "sharded"  # meta.json "format" of a sharded checkpoint (absent: the full format)


@dataclass
class Checkpoint:
    path: Path  # the step directory
    meta: dict  # meta.json
    config: dict  # config.json
    model_state: dict[str, torch.Tensor]  # Transformer weights
    heads_state: dict[str, torch.Tensor] = field(default_factory=dict)  # objective heads
    train_state: dict[str, Any] = field(default_factory=dict)  # optimizer, schedule, RNG, data position
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # the Transformer's weights' shapes

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint directories under `root`, oldest first (temporary ones are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def remove_orphans(root: str | Path) -> list[str]:
    """Delete what a killed checkpoint write left under `root`: its temporary `.step_*.tmp` directories, and a
    `.step_N.old` whose `step_N` is complete (one without it is kept: it may be the only copy). Only safe with
    no other writer (the run directory's lock). Returns the names removed."""
    root = Path(root)
    if not root.is_dir():
        return []
    gone = []
    for p in root.iterdir():
        m = re.fullmatch(r"\.(step_\d+)\.(?:.+\.tmp|old)", p.name)
        if p.is_dir() and m and (p.name.endswith(".tmp") or (root / m.group(1)).is_dir()):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p.name)
    return sorted(gone)


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors wants dense, unshared CPU tensors
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _file_record(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _finish(root: Path, name: str, keep: int) -> Path:
    """After the step directory `name` is in place: point `latest` at it, keep the newest `keep` (0 = all)."""
    atomic_write_text(root / LATEST, name + "\n")
    if keep > 0:
        for old in list_checkpoints(root)[:-keep]:
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    return root / name


def save_checkpoint(root: str | Path, step: int, *, model_state: dict[str, torch.Tensor],
                    heads_state: dict[str, torch.Tensor] | None = None, train_state: dict[str, Any] | None = None,
                    config: dict | None = None, tokenizer_sha256: str = "", keep: int = 0) -> Path:
    """Write checkpoint `step` under `root` atomically, point `latest` at it, keep the newest `keep` (0 = all)."""
    root = Path(root)
    name = step_dir_name(step)
    with atomic_dir(root / name) as tmp:
        save_file(_contiguous(model_state), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        save_file(_contiguous(heads_state or {}), str(tmp / "heads.safetensors"), metadata={"format": "pt"})
        torch.save(train_state or {}, tmp / "state.pt")
        atomic_write_json(tmp / "config.json", config or {})
        meta = {
            "step": step,
            "tokenizer_sha256": tokenizer_sha256,
            "xling_version": __version__,
            "files": {f: _file_record(tmp / f) for f in FILES},
        }
        atomic_write_json(tmp / "meta.json", meta)
    return _finish(root, name, keep)


def other_checkpoint_fix(root: Path, bad: Path | None = None) -> str:
    """What to do when a checkpoint under `root` is unusable: point `latest` at the newest other complete one
    (every command that loads a run, `pretrain`'s resume included, follows `latest`), or retrain."""
    others = [p for p in list_checkpoints(root) if p != bad and (p / "meta.json").is_file()]
    if others:
        return f"use another checkpoint: `echo {others[-1].name} > {root / LATEST}`, or retrain"
    return "no other checkpoint is left: retrain"


def find_checkpoint(path: str | Path) -> Path:
    """A step directory: `path` itself, or the one `path/latest` names (else the newest one there)."""
    path = Path(path)
    if (path / "meta.json").is_file():
        return path
    if not path.is_dir():
        raise XlingError(f"checkpoint {path} does not exist; train first (`xling pretrain`) or give another path")
    latest = path / LATEST
    if latest.is_file():
        raw = latest.read_bytes().strip()
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:  # a disk error or another program's bytes: say so, not a traceback
            name = None
        if name is not None and STEP_DIR.match(name) and (path / name / "meta.json").is_file():
            return path / name
        what = f"names {name}, which is missing or incomplete" if name and STEP_DIR.match(name) else \
            f"does not hold a step directory's name ({raw[:20]!r})"
        raise XlingError(f"{latest} {what}; {other_checkpoint_fix(path)}")
    found = list_checkpoints(path)
    if not found:
        raise XlingError(f"no checkpoint in {path}; train first (`xling pretrain`) or give another path")
    return found[-1]


def _read_meta(step_dir: Path) -> dict:
    meta_path = step_dir / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        files = meta["files"]
        int(meta["step"])
        if not all(isinstance(n, str) and ".." not in Path(n).parts and not Path(n).is_absolute() and
                   isinstance(w["bytes"], int) and isinstance(w["sha256"], str) for n, w in files.items()):
            raise ValueError("a file entry is not a relative name with bytes and sha256")
        if not all(isinstance(k, str) and isinstance(v, list) and all(isinstance(d, int) for d in v)
                   for k, v in meta.get("shapes", {}).items()):
            raise ValueError("a shape is not a list of integers")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise XlingError(f"checkpoint {step_dir} is corrupt: {meta_path.name} is unreadable ({type(e).__name__}); "
                         f"{other_checkpoint_fix(step_dir.parent, step_dir)}") from None
    return meta


def _check_files(step_dir: Path, meta: dict, names: list[str] | None = None) -> None:
    """The size and sha256 of each of `names` (default: every file meta.json lists) against meta.json."""
    files = meta["files"]
    for name in files if names is None else names:
        want = files[name]
        f = step_dir / name
        if not f.is_file():
            raise XlingError(f"checkpoint {step_dir} is incomplete: {name} is missing; "
                             f"{other_checkpoint_fix(step_dir.parent, step_dir)}")
        size = f.stat().st_size
        if size != want["bytes"]:
            raise XlingError(f"checkpoint file {f} is truncated or altered ({size:,} bytes, expected "
                             f"{want['bytes']:,}); {other_checkpoint_fix(step_dir.parent, step_dir)}")
        if sha256_file(f) != want["sha256"]:
            raise XlingError(f"checkpoint file {f} is corrupt (sha256 differs from meta.json); "
                             f"{other_checkpoint_fix(step_dir.parent, step_dir)}")


def _verify(step_dir: Path) -> dict:
    meta = _read_meta(step_dir)
    _check_files(step_dir, meta)
    return meta


def load_checkpoint(path: str | Path, *, train_state: bool = True, weights: bool = True) -> Checkpoint:
    """Load and verify a checkpoint (a step directory, or a root with `latest`). Tensors land on the CPU.

    A sharded checkpoint's weights are assembled here in full, in this process (its optimizer tensors are not
    read). weights=False: no weights are read, only their shapes (`Checkpoint.shapes`)."""
    step_dir = find_checkpoint(path)
    return _read_checkpoint(step_dir, _verify(step_dir), train_state=train_state, weights=weights)


def _read_checkpoint(step_dir: Path, meta: dict, *, train_state: bool = True, weights: bool = True) -> Checkpoint:
    """The checkpoint whose files were verified against `meta`."""
    from safetensors import safe_open

    from xling.sharded import consolidate, shard_shapes

    sharded = meta.get("format") == SHARDED
    model_state: dict[str, torch.Tensor] = {}
    heads_state: dict[str, torch.Tensor] = {}
    try:
        config = json.loads((step_dir / "config.json").read_text(encoding="utf-8"))
        if sharded:
            unlisted = sorted(f"{SHARDS}/{p.name}" for p in (step_dir / SHARDS).iterdir()
                              if f"{SHARDS}/{p.name}" not in meta["files"])
            if unlisted:  # DCP would read every safetensors file of the folder
                raise XlingError(f"checkpoint {step_dir} holds {unlisted[0]}, which its meta.json does not list; "
                                 f"remove it")
            saved = meta.get("shapes")  # every saved tensor's full shape, as the writing ranks knew it
            shapes = {k[len("model."):]: v for k, v in shard_shapes(step_dir / SHARDS, saved).items()
                      if k.startswith("model.")}
            if weights:
                full = consolidate(step_dir / SHARDS, ("model.", "objectives."), saved)
                model_state = {k[len("model."):]: v for k, v in full.items() if k.startswith("model.")}
                heads_state = {k[len("objectives."):]: v for k, v in full.items() if k.startswith("objectives.")}
        elif weights:
            model_state = load_file(str(step_dir / "model.safetensors"))
            heads_state = load_file(str(step_dir / "heads.safetensors"))
            shapes = {k: tuple(v.shape) for k, v in model_state.items()}
        else:
            with safe_open(str(step_dir / "model.safetensors"), framework="pt") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        state = torch.load(step_dir / "state.pt", map_location="cpu", weights_only=True) if train_state else {}
    except XlingError as e:
        raise XlingError(f"{e}; {other_checkpoint_fix(step_dir.parent, step_dir)}") from None
    except pickle.UnpicklingError:  # weights_only=True refused an object: not a state file xling wrote
        raise XlingError(f"checkpoint file {step_dir / 'state.pt'} holds objects xling does not write; "
                         f"refusing to unpickle it") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, SafetensorError, RuntimeError,
            ValueError, EOFError) as e:
        raise XlingError(f"checkpoint {step_dir} cannot be read ({type(e).__name__}: {str(e)[:120]}); "
                         f"{other_checkpoint_fix(step_dir.parent, step_dir)}") from None
    return Checkpoint(step_dir, meta, config, model_state, heads_state, state, shapes)


def check_compatible(ckpt: Checkpoint, model_cfg: dict, tokenizer_sha256: str | None = None,
                     model_state: dict[str, torch.Tensor] | None = None) -> None:
    """One XlingError if the checkpoint was made for another model shape or tokenizer.

    model_cfg: the current ModelConfig as a dict; model_state: the current model's state dict (tensors or
    DTensors), to compare every tensor's shape (a config that matches but weights that do not still fail here,
    not in torch).
    """
    old = ckpt.config.get("model", {})
    keys = ("vocab_size", "n_langs", "block_size", "n_layer", "d_model", "n_head", "d_ff", "pos", "norm",
            "mlp", "bias")
    diff = [f"{k}={old.get(k)!r} there, {model_cfg.get(k)!r} here" for k in keys
            if k in old and k in model_cfg and old[k] != model_cfg[k]]
    if diff:
        raise XlingError(f"checkpoint {ckpt.path} is for another model shape ({'; '.join(diff[:3])}); use the "
                         f"run's model config or start a new run")
    have = ckpt.meta.get("tokenizer_sha256", "")
    if tokenizer_sha256 and have and have != tokenizer_sha256:
        raise XlingError(f"checkpoint {ckpt.path} was trained with tokenizer sha256 {have[:12]}… but these "
                         f"shards use {tokenizer_sha256[:12]}…; resume with the same tokenizer or start a new run")
    if model_state is not None:
        shapes = ckpt.shapes or {k: tuple(v.shape) for k, v in ckpt.model_state.items()}
        missing = sorted(set(model_state) - set(shapes))
        extra = sorted(set(shapes) - set(model_state))
        if missing or extra:
            raise XlingError(f"checkpoint {ckpt.path} does not fit this model (missing {missing[:3]}, "
                             f"unexpected {extra[:3]}); use the run's model config or start a new run")
        for k, v in model_state.items():  # a DTensor's shape is the full one
            if tuple(shapes[k]) != tuple(v.shape):
                raise XlingError(f"checkpoint {ckpt.path}: {k} has shape {tuple(shapes[k])}, "
                                 f"this model {tuple(v.shape)}; use the run's model config or start a new run")


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """(Transformer with the checkpoint's weights in eval mode, its ModelConfig, meta) for later stages."""
    from dataclasses import fields

    from xling.model import ModelConfig, Transformer

    ckpt = load_checkpoint(path, train_state=False)
    names = {f.name for f in fields(ModelConfig)}
    try:
        cfg = ModelConfig(**{k: v for k, v in ckpt.config.get("model", {}).items() if k in names})
    except (TypeError, ValueError) as e:
        raise XlingError(f"checkpoint {ckpt.path}: config.json has an invalid model config ({e})") from None
    model = Transformer(cfg)
    check_compatible(ckpt, ckpt.config.get("model", {}), model_state=model.state_dict())
    model.load_state_dict(ckpt.model_state)
    return model.to(device).eval(), cfg, ckpt.meta


def load_run(path: str | Path, tokenizer_dir: str | Path | None = None,
             device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Tokenizer]:
    """(model in eval mode, tokenizer) of a trained run: a run directory, a checkpoints root or one step directory.

    The tokenizer comes from `tokenizer_dir`, else from the nearest `tokenizer/` beside the checkpoints
    (`<run>/tokenizer` for `<run>`, `<run>/checkpoints` or `<run>/checkpoints/step_N`); it must be the
    one the checkpoint was trained with (sha256 recorded in the checkpoint).
    """
    from xling.tokenizer import load_tokenizer, tokenizer_hash

    path = Path(path)
    ckpt_path = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    model, cfg, meta = load_model(ckpt_path, device)
    if tokenizer_dir is None:
        near = (path, *path.resolve().parents[:3])
        found = [d / "tokenizer" for d in near if (d / "tokenizer" / "tokenizer.json").is_file()]
        if not found:
            raise XlingError(f"no tokenizer/ found in {path} or the 3 folders above it; give the run directory "
                             f"(it holds tokenizer/ and checkpoints/), or copy the run's tokenizer/ folder into {path}")
        tokenizer_dir = found[0]
    tok = load_tokenizer(tokenizer_dir)
    want = meta.get("tokenizer_sha256", "")
    if want and tokenizer_hash(tokenizer_dir) != want:
        raise XlingError(f"tokenizer {tokenizer_dir} is not the one checkpoint {path} was trained with "
                         f"(sha256 differs); use that run's tokenizer/ directory")
    if tok.get_vocab_size() > cfg.vocab_size:
        raise XlingError(f"tokenizer {tokenizer_dir} has {tok.get_vocab_size()} tokens but the model only "
                         f"{cfg.vocab_size}; use the run's own tokenizer")
    return model, tok


# ---------------------------------------------------------------------------- a training module's state

def save_training(root: str | Path, step: int, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  train_state: dict[str, Any], *, config: dict, tokenizer_sha256: str, keep: int,
                  sharded: bool = False) -> Path | None:
    """Checkpoint a (possibly DDP/FSDP-wrapped) `TrainModule` and its optimizer; every rank calls it.

    Full format: the full weights and optimizer state are gathered to rank 0 (a collective under FSDP), which
    writes `model.*` weights to model.safetensors, `objectives.*` to heads.safetensors and the optimizer into
    state.pt beside `train_state`. sharded: every rank writes its own shards into dcp/ (`_save_sharded`).
    Returns the step directory on rank 0, None elsewhere.
    """
    from torch.distributed.checkpoint import state_dict as dsd

    from xling import distributed as xdist

    if sharded:
        return _save_sharded(Path(root), step, module, optimizer, train_state, config=config,
                             tokenizer_sha256=tokenizer_sha256, keep=keep)
    opts = dsd.StateDictOptions(full_state_dict=True, cpu_offload=True)
    module_state = dsd.get_model_state_dict(module, options=opts)
    optim_state = dsd.get_optimizer_state_dict(module, optimizer, options=opts)
    path = None
    if xdist.is_main():
        model = {k[len("model."):]: v for k, v in module_state.items() if k.startswith("model.")}
        heads = {k[len("objectives."):]: v for k, v in module_state.items() if k.startswith("objectives.")}
        path = save_checkpoint(root, step, model_state=model, heads_state=heads,
                               train_state={**train_state, "optimizer": optim_state}, config=config,
                               tokenizer_sha256=tokenizer_sha256, keep=keep)
    xdist.barrier()
    return path


def _save_sharded(root: Path, step: int, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  train_state: dict[str, Any], *, config: dict, tokenizer_sha256: str, keep: int) -> Path | None:
    """The sharded format, with the full format's guarantees: rank 0 makes the temporary step directory and
    tells every rank its name; each rank writes its shard file into dcp/ and hashes its share of them; rank 0
    writes state.pt, config.json and meta.json (every file's size and sha256), renames the directory into place
    and updates `latest`. A failure on any rank fails the save on every rank (DCP gathers them), and the
    temporary directory is removed: never half a checkpoint."""
    from xling import distributed as xdist
    from xling.sharded import save_shards

    rank, world, name = xdist.rank(), xdist.world_size(), step_dir_name(step)
    with contextlib.ExitStack() as stack:
        tmp, error = None, None
        if rank == 0:
            try:
                tmp = stack.enter_context(atomic_dir(root / name))
                (tmp / SHARDS).mkdir()
            except XlingError as e:
                error = str(e)
        tmp, error = xdist.broadcast_object((tmp and str(tmp), error))
        if error:
            raise XlingError(error)
        tmp = Path(tmp)
        rest = save_shards(tmp / SHARDS, module, optimizer)
        shapes = rest.pop("shapes")
        # each rank hashes a share of the shard files: no rank reads every shard
        try:
            shard_files = sorted(f"{SHARDS}/{p.name}" for p in (tmp / SHARDS).iterdir())
            mine: dict | str = {f: _file_record(tmp / f) for f in shard_files[rank::world]}
        except OSError as e:
            mine = f"rank {rank} cannot read the shard files it hashes ({e})"
        parts = xdist.all_gather_objects(mine)
        if error := next((p for p in parts if isinstance(p, str)), None):
            raise XlingError(f"checkpoint {root / name} was not written: {error}")
        records = {f: r for part in parts for f, r in part.items()}
        failure = None
        if rank == 0:
            try:
                torch.save({**train_state, "optimizer": rest}, tmp / "state.pt")
                atomic_write_json(tmp / "config.json", config or {})
                records.update({f: _file_record(tmp / f) for f in ("state.pt", "config.json")})
                meta = {"step": step, "format": SHARDED, "processes": world, "tokenizer_sha256": tokenizer_sha256,
                        "xling_version": __version__, "files": dict(sorted(records.items())), "shapes": shapes}
                atomic_write_json(tmp / "meta.json", meta)
            except Exception as e:  # every rank must leave this call (the others would wait at a collective)
                failure = e
        error = xdist.broadcast_object(None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise failure
        if error:
            raise XlingError(f"checkpoint {root / name} was not written: rank 0 failed ({error})")
    path = _finish(root, name, keep) if rank == 0 else None
    xdist.barrier()
    return path


def load_training(path: str | Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                  model_cfg: dict, tokenizer_sha256: str, model_state: dict[str, torch.Tensor] | None = None,
                  check=None) -> dict[str, Any]:
    """Load weights and optimizer state into a (wrapped) `TrainModule`; returns the rest of train_state.

    Either format, in any number of processes. Rank 0 reads meta.json; the files are checked against it (a
    sharded checkpoint's by every rank, each a share of them; a full one's by rank 0), then rank 0 reads the
    config and train state and checks them (`check_compatible`, then `check(ckpt)` for the caller's own
    conditions). An error anywhere is raised as the same XlingError on every rank, before any tensor is read.
    Full format: the state is broadcast from rank 0, so only rank 0 needs to see the files. Sharded: every rank
    reads the pieces of the shard files its own shards overlap (`xling.sharded.load_shards`).
    """
    from torch.distributed.checkpoint import state_dict as dsd

    from xling import distributed as xdist
    from xling.sharded import load_shards

    rank, world = xdist.rank(), xdist.world_size()
    found, error = None, None
    if rank == 0:
        try:
            step_dir = find_checkpoint(path)
            found = (str(step_dir), _read_meta(step_dir))
        except XlingError as e:
            error = str(e)
    found, error = xdist.broadcast_object((found, error))
    if error:
        raise XlingError(error)
    step_dir, meta = Path(found[0]), found[1]
    sharded = meta.get("format") == SHARDED
    names = sorted(meta["files"])
    try:
        _check_files(step_dir, meta, names[rank::world] if sharded else names if rank == 0 else [])
    except XlingError as e:
        error = str(e)
    error = next((e for e in xdist.all_gather_objects(error) if e), None)
    ckpt = None
    if rank == 0 and not error:
        try:
            ckpt = _read_checkpoint(step_dir, meta, weights=not sharded)
            check_compatible(ckpt, model_cfg, tokenizer_sha256, model_state)
            if check is not None:
                check(ckpt)
        except XlingError as e:
            error = str(e)
    error = xdist.broadcast_object(error)
    if error:
        raise XlingError(error)
    params = {n.removeprefix("module."): p for n, p in module.named_parameters()}  # names without DDP's "module."
    if sharded:
        state = xdist.broadcast_object({k: v for k, v in ckpt.train_state.items()} if ckpt else None)
        stateless = load_shards(step_dir / SHARDS, module, optimizer, state.pop("optimizer"))
    else:
        module_state, optim_state, state, stateless = {}, {}, None, None
        if ckpt is not None:
            module_state = {**{f"model.{k}": v for k, v in ckpt.model_state.items()},
                            **{f"objectives.{k}": v for k, v in ckpt.heads_state.items()}}
            optim_state = ckpt.train_state["optimizer"]
            state = {k: v for k, v in ckpt.train_state.items() if k != "optimizer"}
            saved = set(optim_state.get("state", {}))  # keyed by fully qualified names, without DDP's "module."
            stateless = [n for n, p in params.items() if p.requires_grad and n not in saved]
        state, stateless = xdist.broadcast_object((state, stateless))
        opts = dsd.StateDictOptions(full_state_dict=True, broadcast_from_rank0=world > 1, strict=True)
        dsd.set_model_state_dict(module, module_state, options=opts)
        # An objective's head that no step had used yet (each step trains one objective) has no AdamW state in the
        # checkpoint, and must have none after loading, as in the run that was not interrupted: its first update
        # then is AdamW's first step. torch gives every parameter a state before loading (a zero-gradient step at
        # lr 0) and refuses a missing one when strict, so the load is not strict and that placeholder state is
        # dropped after it; the weights above are loaded strictly, so a missing or unexpected parameter is still an
        # error. (load_shards does the same and returns the names.)
        dsd.set_optimizer_state_dict(module, optimizer, optim_state, options=dataclasses.replace(opts, strict=False))
    for name in stateless:
        optimizer.state.pop(params[name], None)
    return state
