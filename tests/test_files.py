"""xling.files: line reading that keeps line-aligned files aligned, and one clear error per bad file."""

from __future__ import annotations

import pytest

from xling.errors import XlingError
from xling.files import read_lines


@pytest.mark.parametrize("raw, lines", [
    (b"a\nb\n", ["a", "b"]),
    (b"a\nb", ["a", "b"]),  # no final newline
    (b"a\r\nb\r\n", ["a", "b"]),  # Windows line ends
    (b"\xef\xbb\xbfa\n\nc\n", ["a", "", "c"]),  # BOM dropped, an empty line kept in place
    # separators that str.splitlines() would cut at stay inside their line
    ("x\u2028y\nz\x0cw\x85v\n".encode(), ["x\u2028y", "z\x0cw\x85v"]),
])
def test_read_lines_splits_at_newlines_only(tmp_path, raw, lines):
    (tmp_path / "f.txt").write_bytes(raw)
    assert read_lines(tmp_path / "f.txt") == lines


@pytest.mark.parametrize("raw, match", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"ok\n\xff\xfe\n", "line 2: bytes are not UTF-8"),
])
def test_read_lines_bad_files(tmp_path, raw, match):
    path = tmp_path / "f.txt"
    if raw is not None:
        path.write_bytes(raw)
    with pytest.raises(XlingError, match=match):
        read_lines(path, "input file")
