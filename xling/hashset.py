"""An exact set of 64-bit hashes in 8 bytes an entry: what corpus deduplication remembers of every text it kept.

    seen = HashSet64()
    new = seen.first_new(np.array([5, 7, 5, 9], dtype=np.uint64))   # [True, True, False, True]
    seen.add(np.array([5, 7, 9], dtype=np.uint64))
    seen.contains(np.array([7, 8], dtype=np.uint64))                  # [True, False]

A Python set of ints costs ~70 bytes an entry (a 20-million-line corpus: 1.4 GB a set); here the hashes live in
sorted uint64 runs whose lengths halve from the oldest to the newest, as a binary counter's bits: adding a run
merges it with every run no longer than itself (a stable sort of two sorted runs is a linear merge), so each hash
is merged O(log n) times and a lookup searches O(log n) runs. Peak memory: the entries plus one merge's copy.
"""

from __future__ import annotations

import numpy as np


class HashSet64:
    def __init__(self):
        self.runs: list[np.ndarray] = []  # sorted uint64 arrays, longest first

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self.runs)

    def contains(self, h: np.ndarray) -> np.ndarray:
        """(n,) bool: which of the hashes `h` (n,) uint64 are in the set."""
        h = np.asarray(h, dtype=np.uint64)
        out = np.zeros(len(h), dtype=bool)
        for run in self.runs:
            i = np.searchsorted(run, h)
            i[i == len(run)] = 0  # past the end: compare with any entry, which differs
            out |= run[i] == h
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
            run = np.sort(np.concatenate([self.runs.pop(), run]), kind="stable")
        if len(run):
            self.runs.append(run)
