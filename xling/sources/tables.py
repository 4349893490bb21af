"""Column-table sources: parquet files, and Hugging Face `datasets` folders.

    [corpus]
    source = "parquet"            # *.parquet files, or folders of them (searched recursively)
    paths = ["data/"]
    text_column = "text"          # column names, as in the data
    lang_column = "lang"
    id_column = "id"              # optional column; equal ids across languages = translations

    source = "hf"                 # folders written by datasets.Dataset(Dict).save_to_disk
    paths = ["my_dataset/"]

Both read the Arrow data with pyarrow (`pip install 'xling[parquet]'` or
`'xling[datasets]'`); the `datasets` package itself is not needed: a
`save_to_disk` folder is a `state.json` listing Arrow IPC stream files (a
DatasetDict folder has a `dataset_dict.json` and one such folder per split).
Rows without an id get the key `"<file or split>:<row>"` (rows count from 0).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from xling.errors import XlingError
from xling.sources import Segment
from xling.sources.jsonl import RecordChecker, list_files, missing_column

if TYPE_CHECKING:
    from xling.corpus import CorpusConfig

BATCH_ROWS = 65536


def _pyarrow(extra: str):
    try:
        import pyarrow  # noqa: PLC0415 (optional dependency)
        import pyarrow.ipc  # noqa: F401, PLC0415
        import pyarrow.parquet  # noqa: F401, PLC0415
    except ImportError:
        raise XlingError(f"reading this source needs pyarrow; install it with: pip install 'xling[{extra}]'") from None
    return pyarrow


def read(cfg: CorpusConfig) -> Iterator[Segment]:
    if cfg.source == "hf":
        pa = _pyarrow("datasets")
        tables = [t for p in _paths(cfg) for t in _hf_tables(Path(p), pa)]
    else:
        pa = _pyarrow("parquet")
        tables = [(f, f.name, "parquet") for f in list_files(cfg.paths, "*.parquet", "parquet")]
    return _segments(tables, cfg, pa)


def _paths(cfg: CorpusConfig) -> list[str]:
    if not cfg.paths:
        raise XlingError("corpus.paths is empty; list the folders written by datasets' save_to_disk")
    return cfg.paths


def _hf_tables(folder: Path, pa) -> list[tuple[Path, str, str]]:
    """(arrow file, key prefix: split or folder name, "arrow") for every data file of a save_to_disk folder."""
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is a file"
        raise XlingError(f"Hugging Face dataset folder {folder} {what}; give the folder save_to_disk wrote")
    if (folder / "dataset_dict.json").is_file():
        splits = _json(folder / "dataset_dict.json").get("splits")
        if not isinstance(splits, list) or not splits:
            raise XlingError(f"{folder / 'dataset_dict.json'} lists no splits; save the dataset again")
        out = []
        for split in splits:
            out += [(f, split, "arrow") for f in _dataset_files(folder / split)]
        return out
    return [(f, folder.name, "arrow") for f in _dataset_files(folder)]


def _dataset_files(folder: Path) -> list[Path]:
    state = folder / "state.json"
    if not state.is_file():
        raise XlingError(f"{folder} is not a datasets save_to_disk folder (no state.json or dataset_dict.json); "
                         f"save it with Dataset.save_to_disk")
    files = [d.get("filename") for d in _json(state).get("_data_files", [])]
    if not files or not all(isinstance(f, str) for f in files):
        raise XlingError(f"{state} lists no data files; save the dataset again")
    for f in files:
        if not (folder / f).is_file():
            raise XlingError(f"{folder / f} (listed in {state}) is missing; save the dataset again")
    return [folder / f for f in files]


def _json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise XlingError(f"{path} is not valid JSON ({e}); save the dataset again") from None
    if not isinstance(obj, dict):
        raise XlingError(f"{path} is not a JSON object; save the dataset again")
    return obj


def _batches(path: Path, kind: str, columns: list[str], pa):
    """Yield (column names, RecordBatch) over one file, reading only `columns` where possible."""
    try:
        if kind == "parquet":
            pf = pa.parquet.ParquetFile(path)
            names = pf.schema_arrow.names
            yield names, None
            yield from ((names, b) for b in pf.iter_batches(BATCH_ROWS, columns=[c for c in columns if c in names]))
        else:
            with pa.memory_map(str(path)) as source:
                reader = pa.ipc.open_stream(source)
                names = reader.schema.names
                yield names, None
                yield from ((names, b) for b in reader)
    except (pa.ArrowInvalid, OSError) as e:
        what = "parquet" if kind == "parquet" else "Arrow stream (save_to_disk)"
        raise XlingError(f"{path} is not a readable {what} file ({e}); check corpus.paths") from None


def _segments(tables: list[tuple[Path, str, str]], cfg: CorpusConfig, pa) -> Iterator[Segment]:
    check = RecordChecker(cfg)
    next_row: dict[str, int] = {}  # rows count on across the files of one dataset (or same-named files)
    for path, prefix, kind in tables:
        batches = _batches(path, kind, [cfg.text_column, cfg.lang_column, cfg.id_column], pa)
        names, _ = next(batches)
        for column, option in ((cfg.text_column, "text_column"), (cfg.lang_column, "lang_column")):
            if column not in names:
                raise missing_column(str(path), column, option, names)
        has_id = cfg.id_column in names
        row = next_row.get(prefix, 0)
        for _, batch in batches:
            texts = batch.column(cfg.text_column).to_pylist()
            langs = batch.column(cfg.lang_column).to_pylist()
            ids = batch.column(cfg.id_column).to_pylist() if has_id else [None] * len(texts)
            for text, lang, ident in zip(texts, langs, ids, strict=True):
                seg = check.segment(text, lang, ident, f"{prefix}:{row}", f"{path} row {row}")
                row += 1
                if seg is not None:
                    yield seg
        next_row[prefix] = row
