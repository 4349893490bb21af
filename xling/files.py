"""Small file helpers every stage uses: atomic writes and careful text reading.

Nothing half-written: files go to a temporary name in the same directory and
are renamed into place; a stage builds its whole output directory under a
temporary name and renames it when done.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from xling.errors import WorkerLost, XlingError


def check_writable(path: str | Path, what: str = "output file", *, directory: bool = False) -> Path:
    """One clear XlingError, before any work, for an output path that cannot become a file (or, with
    `directory`, a directory): a directory where a file is wanted (a file where a directory is), a parent that
    is a file, a place this process may not create files in (e.g. /proc)."""
    path = Path(path)
    if directory and path.exists() and not path.is_dir():
        raise XlingError(f"{what} {path} is a file; choose another path")
    if not directory and path.is_dir():
        raise XlingError(f"{what} {path} is a directory; give a file path")
    parent = path if directory and path.is_dir() else next((p for p in path.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise XlingError(f"cannot write {what} {path}: {parent} is a file; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK) or str(path.resolve()).startswith(("/proc/", "/sys/")):
        raise XlingError(f"cannot write {what} {path}: {parent} is not writable; choose another path")
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # a race or a filesystem refusing: still one line, not a traceback
        raise XlingError(f"cannot write {path}: {e.strerror}; choose another path") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = True, keep: str | None = None) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `path`.

    On any exception `path` is untouched and the temporary directory is removed, unless `keep` names the work:
    then it is `.<name>.partial-<keep>`, kept when the work stopped for a reason other than its input (Ctrl-C, a
    worker lost, a full disk, the process killed) and handed back to the next call with the same `keep` (what a
    stage that can tell finished pieces from unfinished ones resumes from; a partial directory of other work is
    removed once this one succeeds). An XlingError about the input removes it: the fix changes the input.
    """
    path = check_writable(path, "output directory", directory=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if keep is None:
            tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        else:
            tmp = path.with_name(f".{path.name}.partial-{keep}")
            tmp.mkdir(exist_ok=True)
    except OSError as e:  # a race or a filesystem refusing: still one line, not a traceback
        raise XlingError(f"cannot write {path}: {e.strerror}; choose another path") from None
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise XlingError(f"{path} already exists; pass --overwrite to replace it")
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        for stale in path.parent.glob(f".{path.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
    except BaseException as e:
        if keep is None or (isinstance(e, XlingError) and not isinstance(e, WorkerLost)):
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_free_space(path: str | Path, need: int, what: str) -> None:
    """One XlingError before any writing when the filesystem of `path` (or its nearest existing parent) has less
    than `need` bytes free."""
    where = Path(path).absolute()
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if free < need:
        raise XlingError(f"{what} needs about {need / 1e9:.2f} GB but {where} has {free / 1e9:.2f} GB free; "
                         f"free {(need - free) / 1e9:.2f} GB or write the run to another disk (--run)")


# byte-order marks of the encodings a Windows editor or PowerShell (`>` is UTF-16 there) writes; UTF-32 first:
# its little-endian mark starts with UTF-16's
_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32 LE", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32 BE", "UTF-32"),
         (b"\xff\xfe", "UTF-16 LE", "UTF-16"), (b"\xfe\xff", "UTF-16 BE", "UTF-16"))


LATIN1_FIX = "re-encode it, e.g. `iconv -f latin1 -t utf-8` (if it is Latin-1)"


def not_utf8_fix(data: bytes, otherwise: str = LATIN1_FIX) -> str:
    """The fix to name for `data` that is not UTF-8: a byte-order mark (or every other byte NUL) says UTF-16 or
    UTF-32, which latin1 would turn into garbage; anything else gets `otherwise` (by default: a legacy 8-bit
    encoding, the likeliest)."""
    for bom, name, iconv in _BOMS:
        if data.startswith(bom):
            return f"it is {name} text (it starts with a byte-order mark); convert it: `iconv -f {iconv} -t UTF-8`"
    head = data[:4096]
    for name, zeros in (("UTF-16 LE", head[1::2]), ("UTF-16 BE", head[0::2])):
        if len(head) >= 4 and zeros.count(0) > 0.9 * len(zeros):
            return f"it looks like {name} text (every other byte is NUL); convert it: " \
                   f"`iconv -f {name.replace(' ', '')} -t UTF-8`"
    return otherwise


def check_utf8(text: str, what: str) -> str:
    """`text` back, or one XlingError when it holds bytes that were not UTF-8 (Python keeps them as lone
    surrogates in command-line arguments and, under some locales, standard input)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            data = text.encode("utf-8", "surrogateescape")  # the bytes as they came, for the hint
        except UnicodeEncodeError:
            data = b""
        raise XlingError(f"{what} is not valid UTF-8 text; {not_utf8_fix(data)}") from None
    return text


def read_lines(path: str | Path, what: str = "file") -> list[str]:
    """Read a UTF-8 text file as lines (without newlines), with clear errors.

    Missing, not-a-file, empty and non-UTF-8 files each get one line naming the
    file (and the line number of the first bad byte) and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise XlingError(f"{what} {path} does not exist; check the path")
    if path.is_dir():
        raise XlingError(f"{what} {path} is a directory; give a file")
    data = path.read_bytes()
    if not data.strip():
        raise XlingError(f"{what} {path} is empty; give a file with at least one line of text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise XlingError(f"{what} {path} line {line}: bytes are not UTF-8 ({data[e.start:e.start + 4]!r}); "
                         f"{not_utf8_fix(data)}") from None
    if "\0" in text:  # valid UTF-8, but no text file holds NUL: UTF-16 without a byte-order mark, or binary
        line = data[: data.index(b"\0")].count(b"\n") + 1
        raise XlingError(f"{what} {path} line {line}: holds NUL bytes, which text does not; "
                         f"{not_utf8_fix(data, 'give a UTF-8 text file (is it binary?)')}")
    if text.startswith("\ufeff"):
        text = text[1:]
    # "\n" (and "\r\n") only: str.splitlines would also split at U+2028, form feeds, ..., shifting the lines
    # of one file against a line-aligned partner (hypotheses vs references, source vs target)
    lines = text.replace("\r\n", "\n").split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def iter_lines(path: str | Path, what: str = "file", span: tuple[int, int | None, int] | None = None) -> Iterator[str]:
    """`read_lines` one line at a time, in memory bounded by the longest line: for corpus files of any size.

    The same checks and messages (missing, a directory, not UTF-8, NUL bytes, empty), each naming the line. An
    error at line n comes after lines 1..n-1 were yielded: a caller that writes must write into a temporary
    place (the corpus stage builds its folder under a temporary name, so nothing half-written is left).

    `span` = (start byte, end byte or None, number of the line at start), from `line_spans`: only the lines that
    begin in [start, end), numbered from there; what a worker reads. A part of a file is not checked for being
    empty (its file may have text elsewhere).
    """
    path = Path(path)
    if not path.exists():
        raise XlingError(f"{what} {path} does not exist; check the path")
    if path.is_dir():
        raise XlingError(f"{what} {path} is a directory; give a file")
    start, end, first = span or (0, None, 1)
    has_text = False
    with open(path, "rb") as f:
        head = f.read(4096)  # what `not_utf8_fix` reads to name the encoding
        f.seek(start)
        pos = start
        for n, raw in enumerate(f, first):
            if end is not None and pos >= end:
                break
            pos += len(raw)
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise XlingError(f"{what} {path} line {n}: bytes are not UTF-8 ({raw[e.start:e.start + 4]!r}); "
                                 f"{not_utf8_fix(head)}") from None
            if "\0" in line:
                raise XlingError(f"{what} {path} line {n}: holds NUL bytes, which text does not; "
                                 f"{not_utf8_fix(head, 'give a UTF-8 text file (is it binary?)')}")
            line = line[:-1] if line.endswith("\n") else line  # "\n" and "\r\n" only, as read_lines
            line = line[:-1] if line.endswith("\r") and raw.endswith(b"\r\n") else line
            has_text = has_text or bool(line.strip())
            yield line
    if not has_text and span is None:
        raise XlingError(f"{what} {path} is empty; give a file with at least one line of text")


def line_spans(path: str | Path, size: int) -> Iterator[tuple[int, int | None, int]]:
    """(start, end, first line number) of consecutive stretches of about `size` bytes of a file, each starting at
    a line start, for `iter_lines(span=...)`; lazily, reading the file `size` bytes at a time to count lines."""
    start, line = 0, 1
    with open(path, "rb") as f:
        while True:
            block = f.read(size)
            if not block:
                return
            rest = b"" if block.endswith(b"\n") else f.readline()  # finish the line the block cut
            end = start + len(block) + len(rest)
            yield start, end, line
            line += block.count(b"\n") + rest.count(b"\n")
            start = end


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_dir() -> Path:
    """Where downloaded data lives: $XLING_CACHE or ~/.cache/xling."""
    root = os.environ.get("XLING_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "xling")
    return Path(root)
