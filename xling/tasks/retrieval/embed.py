"""`xling embed` for inputs of any size, in one process or many: sentence vectors written as they are computed.

    xling embed --run runs/demo --lang en --input en.txt --out vecs/en                     # one process
    torchrun --standalone --nproc-per-node 4 -m xling embed --run runs/demo --lang en ...   # 4 processes, one file

Every process runs the same command. Each takes its own stretch of the input (`files.line_spans`: the file cut
at line starts into as many byte stretches as there are processes), embeds it BLOCK lines at a time (sorted by
length inside a block, so batches carry little padding) and appends the float32 rows to a part file of its own
beside the output. Rank 0 then writes PREFIX.npy (the .npy header, then the parts in rank order: rows in input
order) and PREFIX.ids, each under a temporary name renamed when complete, and the parts are removed. Memory: one
block's tokens and vectors, whatever the size of the input. Across machines the output folder must be on a
filesystem every machine sees (the parts meet there). An error in one process (a line that is not UTF-8 in its
stretch) is the same one line in every process, and nothing is left behind.
"""

from __future__ import annotations

import os
import shutil
from itertools import islice
from pathlib import Path

import numpy as np
import torch.distributed as dist

from xling import distributed as xdist
from xling.encode import POOL_SPECIALS, embed_texts
from xling.errors import XlingError
from xling.files import iter_lines, line_spans
from xling.progress import progress
from xling.tasks.retrieval.retrieve import check_languages, load_encoder, resolve_layer, vector_paths

BLOCK = 16_384  # lines embedded together: what one process holds (texts, token ids, vectors) at a time


def run_embed(model_dir: str | Path, lang: str, input_path: str | Path, out_prefix: str | Path, *,
              ids_path: str | Path | None = None, layer: int | None = None, pool_specials: bool | None = None,
              batch_size: int = 64) -> dict:
    """`xling embed`: vectors of every line of a text file -> PREFIX.npy + PREFIX.ids; returns a summary (the
    same on every process)."""
    joined = not dist.is_initialized()
    info = xdist.init_distributed()
    path = Path(input_path)
    npy, ids_out = vector_paths(out_prefix)
    part = npy.with_name(f".{npy.name}.part-{info.rank}")
    try:
        error, n, has_text, pool, dim = None, 0, False, POOL_SPECIALS, 0
        try:
            _check_input(path, "input file")
            if ids_path is not None:
                _check_input(Path(ids_path), "ids file")
                n_ids, n_lines = _count_lines(Path(ids_path), (0, None, 1)), _count_lines(path, (0, None, 1))
                if n_ids != n_lines:
                    raise XlingError(f"ids file {ids_path} has {n_ids} lines but the input has {n_lines}; give "
                                     f"one id a line")
            check_languages(model_dir, [lang])
            model, tok = load_encoder(model_dir)
            model.to(info.device)
            layer = resolve_layer(model_dir, model, layer)
            pool = POOL_SPECIALS if pool_specials is None else pool_specials
            dim = model.cfg.d_model
            npy.parent.mkdir(parents=True, exist_ok=True)
            spans = list(line_spans(path, -(-max(path.stat().st_size, 1) // info.world_size)))
            mine = spans[info.rank] if info.rank < len(spans) else None
            with open(part, "wb") as f:
                if mine is not None:
                    n, has_text = _embed_span(model, tok, lang, path, mine, f, layer=layer, pool=pool,
                                              batch_size=batch_size, bar=info.is_main)
        except XlingError as e:
            error = str(e)
        done = xdist.all_gather_objects((error, n, has_text))
        error = next((e for e, _, _ in done if e), None)
        if error is None and not any(t for _, _, t in done):
            error = f"input file {path} is empty; give a file with at least one line of text"
        if error is None and info.is_main:
            try:
                _merge(npy, ids_out, [npy.with_name(f".{npy.name}.part-{r}") for r in range(info.world_size)],
                       [c for _, c, _ in done], dim, ids_path)
            except XlingError as e:
                error = str(e)
        error = xdist.broadcast_object(error)
        xdist.barrier()  # every process has received rank 0's word before any leaves the group (gloo aborts else)
        if error:
            raise XlingError(error)
        return {"vectors": str(npy), "ids": str(ids_out), "n": sum(c for _, c, _ in done), "dim": dim,
                "layer": layer, "pool_specials": pool, "processes": info.world_size}
    finally:
        part.unlink(missing_ok=True)
        if joined:
            xdist.destroy()


def _check_input(path: Path, what: str) -> None:
    if not path.exists():
        raise XlingError(f"{what} {path} does not exist; check the path")
    if path.is_dir():
        raise XlingError(f"{what} {path} is a directory; give a file")


def _embed_span(model, tok, lang: str, path: Path, span: tuple[int, int | None, int], out, *, layer: int,
                pool: bool, batch_size: int, bar: bool) -> tuple[int, bool]:
    """Embed the lines of one stretch of `path`, appending float32 rows to the open file `out`; returns (lines,
    whether any held text)."""
    total = _count_lines(path, span)
    lines = iter_lines(path, "input file", span=span)
    n, has_text = 0, False
    with progress(total=total, desc=f"embed {lang}", unit="line", disable=not bar or None) as shown:
        while block := list(islice(lines, BLOCK)):
            has_text = has_text or any(t.strip() for t in block)
            vecs = embed_texts(model, tok, block, lang, layer=layer, pool_specials=pool, batch_size=batch_size,
                               bar=False)
            out.write(np.ascontiguousarray(vecs, dtype=np.float32).tobytes())
            n += len(block)
            shown.update(len(block))
    return n, has_text


def _count_lines(path: Path, span: tuple[int, int | None, int]) -> int:
    """Lines beginning in [start, end) of `path` (a last line without a newline counts)."""
    start, end, _ = span
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        f.seek(start)
        left = None if end is None else end - start
        while left is None or left > 0:
            block = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not block:
                break
            n += block.count(b"\n")
            last = block[-1:]
            left = None if left is None else left - len(block)
    return n + (last != b"\n")


def _merge(npy: Path, ids_out: Path, parts: list[Path], counts: list[int], dim: int,
           ids_path: str | Path | None) -> None:
    """PREFIX.npy from the parts, in rank order, and PREFIX.ids, each written under a temporary name first."""
    n = sum(counts)
    tmp_ids = ids_out.with_name(f".{ids_out.name}.tmp-{os.getpid()}")
    tmp_npy = npy.with_name(f".{npy.name}.tmp-{os.getpid()}")
    try:
        with open(tmp_ids, "w", encoding="utf-8", newline="\n") as f:
            if ids_path is None:
                for start in range(1, n + 1, 1 << 16):
                    f.write("".join(f"{i}\n" for i in range(start, min(start + (1 << 16), n + 1))))
            else:
                m = 0
                for line in iter_lines(ids_path, "ids file"):
                    f.write(line + "\n")
                    m += 1
                if m != n:
                    raise XlingError(f"ids file {ids_path} has {m} lines but the input has {n}; give one id a line")
        with open(tmp_npy, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)})
            for p in parts:
                with open(p, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 22)
        os.replace(tmp_npy, npy)
        os.replace(tmp_ids, ids_out)
    finally:
        tmp_ids.unlink(missing_ok=True)
        tmp_npy.unlink(missing_ok=True)
