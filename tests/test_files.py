"""xling.files: line reading that keeps line-aligned files aligned, and one clear error per bad file."""

from __future__ import annotations

import pytest

from xling.errors import XlingError
from xling.files import check_utf8, iter_lines, read_lines

# the whole-file reader and the streaming one (corpus sources) answer the same table
READERS = [pytest.param(read_lines, id="read_lines"), pytest.param(lambda *a: list(iter_lines(*a)), id="iter_lines")]


@pytest.mark.parametrize("raw, lines", [
    (b"a\nb\n", ["a", "b"]),
    (b"a\nb", ["a", "b"]),  # no final newline
    (b"a\r\nb\r\n", ["a", "b"]),  # Windows line ends
    (b"\xef\xbb\xbfa\n\nc\n", ["a", "", "c"]),  # BOM dropped, an empty line kept in place
    # separators that str.splitlines() would cut at stay inside their line
    ("x\u2028y\nz\x0cw\x85v\n".encode(), ["x\u2028y", "z\x0cw\x85v"]),
])
@pytest.mark.parametrize("read", READERS)
def test_read_lines_splits_at_newlines_only(tmp_path, raw, lines, read):
    (tmp_path / "f.txt").write_bytes(raw)
    assert read(tmp_path / "f.txt") == lines


@pytest.mark.parametrize("raw, match", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"ok\n\xff\xfe\n", "line 2: bytes are not UTF-8"),
    (b"  \n\n", "is empty"),
    (b"ok\nb\x00d\n", "line 2: holds NUL bytes"),
    ("dir", "is a directory"),
])
@pytest.mark.parametrize("read", READERS)
def test_read_lines_bad_files(tmp_path, raw, match, read):
    path = tmp_path / "f.txt"
    if raw == "dir":
        path.mkdir()
    elif raw is not None:
        path.write_bytes(raw)
    with pytest.raises(XlingError, match=match):
        read(path, "input file")


@pytest.mark.parametrize("raw, named, fix", [
    ("héllo\n".encode("utf-16"), "UTF-16 LE", "iconv -f UTF-16 -t UTF-8"),  # with its byte-order mark
    ("héllo\n".encode("utf-16-be").join([b"\xfe\xff", b""]), "UTF-16 BE", "iconv -f UTF-16 -t UTF-8"),
    ("héllo\n".encode("utf-32"), "UTF-32 LE", "iconv -f UTF-32 -t UTF-8"),
    (b"\x00\x00\xfe\xff" + "hi\n".encode("utf-32-be"), "UTF-32 BE", "iconv -f UTF-32 -t UTF-8"),
    ("hello\n".encode("utf-16-be"), "UTF-16 BE", "iconv -f UTF-16BE -t UTF-8"),  # no mark: valid UTF-8 + NULs
    ("déjà\n".encode("latin-1"), "bytes are not UTF-8", "iconv -f latin1"),
])
@pytest.mark.parametrize("read", READERS)
def test_wide_encodings_are_named_with_a_fix_that_works(tmp_path, raw, named, fix, read):
    """Issue 21: a UTF-16 file with a byte-order mark was told to run `iconv -f latin1`, which makes garbage."""
    path = tmp_path / "f.txt"
    path.write_bytes(raw)
    with pytest.raises(XlingError) as e:
        read(path, "input file")
    assert named in str(e.value) and fix in str(e.value)
    if "latin1" not in fix:
        assert "latin1" not in str(e.value)
    if raw.startswith(b"\x00"):  # valid UTF-8 (NUL is a character): only a file read is checked for NULs
        return
    # standard input arrives as text with the undecodable bytes escaped: the same hint
    with pytest.raises(XlingError) as e:
        check_utf8(raw.decode("utf-8", "surrogateescape"), "standard input")
    assert named.replace("bytes are not UTF-8", "not valid UTF-8") in str(e.value) and fix in str(e.value)
