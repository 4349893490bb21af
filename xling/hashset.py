"""An exact set of 64-bit hashes in 8 bytes an entry, in memory or on disk: what corpus deduplication remembers
of every text it kept.

    seen = HashSet64()                        # all in memory; HashSet64(spill="dir") keeps large runs on disk
    new = seen.first_new(np.array([5, 7, 5, 9], dtype=np.uint64))   # [True, True, False, True]
    seen.add(np.array([5, 7, 9], dtype=np.uint64))
    seen.contains(np.array([7, 8], dtype=np.uint64))                  # [True, False]

A Python set of ints costs ~70 bytes an entry (a 20-million-line corpus: 1.4 GB a set); here the hashes live in
sorted uint64 runs whose lengths halve from the oldest to the newest, as a binary counter's bits: adding a run
merges it with every run no longer than itself (a stable sort of two sorted runs is a linear merge), so each hash
is merged O(log n) times and a lookup searches O(log n) runs.

With `spill`, a run that reaches `in_memory` entries is written to a file in that folder and never merged again;
lookups map it read-only and, once done, tell the kernel this process no longer needs its pages
(MADV_DONTNEED: they stay in the page cache, which the kernel may reclaim, and leave this process's resident
memory). Memory is then bounded by ~2 x `in_memory` entries whatever the number of hashes; the price is a scan
of the spilled runs' pages on each lookup (one file of `in_memory` entries per that many hashes).
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np


class HashSet64:
    def __init__(self, spill: str | Path | None = None, in_memory: int = 1 << 20):
        self.runs: list[np.ndarray] = []  # sorted uint64 arrays in memory, longest first
        self.spill, self.in_memory = (Path(spill) if spill is not None else None), in_memory
        self.files: list[Path] = []  # sorted uint64 runs on disk (raw, native byte order)

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs) + sum(f.stat().st_size // 8 for f in self.files)

    @property
    def nbytes(self) -> int:
        """Bytes held in memory (the runs on disk not counted)."""
        return sum(r.nbytes for r in self.runs)

    def contains(self, h: np.ndarray) -> np.ndarray:
        """(n,) bool: which of the hashes `h` (n,) uint64 are in the set."""
        h = np.asarray(h, dtype=np.uint64)
        out = np.zeros(len(h), dtype=bool)
        for run in self.runs:
            out |= _member(run, h)
        if self.files and len(h):
            order = np.argsort(h, kind="stable")
            q = h[order]  # sorted queries walk each file's pages in order
            found = np.zeros(len(h), dtype=bool)
            for path in self.files:
                with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    run = np.frombuffer(mm, dtype=np.uint64)
                    found |= _member(run, q)
                    del run  # the buffer's last view, before the map closes
                    if hasattr(mm, "madvise"):
                        mm.madvise(mmap.MADV_DONTNEED)
            out[order] |= found
        return out

    def first_new(self, h: np.ndarray) -> np.ndarray:
        """(n,) bool: True where h[i] is neither in the set nor equal to an earlier h[j], j < i (the hashes a
        sequential pass would find new, one at a time)."""
        h = np.asarray(h, dtype=np.uint64)
        first = np.zeros(len(h), dtype=bool)
        first[np.unique(h, return_index=True)[1]] = True
        return first & ~self.contains(h)

    def add(self, h: np.ndarray) -> None:
        """Add hashes that are not in the set yet (the caller has checked; a repeat would be stored twice)."""
        run = np.sort(np.asarray(h, dtype=np.uint64))
        while self.runs and len(self.runs[-1]) <= len(run):
            run = np.concatenate([self.runs.pop(), run])
            run.sort(kind="stable")  # in place: two sorted halves, merged
        if self.spill is not None and len(run) >= self.in_memory:
            self.spill.mkdir(parents=True, exist_ok=True)
            path = self.spill / f"run-{id(self):x}-{len(self.files)}.u64"
            run.tofile(path)
            self.files.append(path)
        elif len(run):
            self.runs.append(run)

    def close(self) -> None:
        """Remove the runs on disk (the set is empty afterwards)."""
        for path in self.files:
            path.unlink(missing_ok=True)
        self.files, self.runs = [], []


def _member(run: np.ndarray, h: np.ndarray) -> np.ndarray:
    """(n,) bool: which of `h` are in the sorted array `run`."""
    if not len(run):
        return np.zeros(len(h), dtype=bool)
    i = np.searchsorted(run, h)
    i[i == len(run)] = 0  # past the end: compare with any entry, which differs
    return run[i] == h
