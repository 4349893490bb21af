"""Peak resident-memory growth of a block of code, for the benchmarks that report memory (retrieve, align)."""

from __future__ import annotations

import gc
import os
import threading
import time


class PeakRSS:
    """Largest resident-set growth (MiB) of this process while the block runs (polled every 2 ms).

    anonymous=True: only memory no file backs (resident minus shared pages): a file read through mmap (safetensors)
    counts in the resident set while mapped, but its pages are page cache the kernel may drop at any time."""

    def __init__(self, anonymous: bool = False):
        self.anonymous = anonymous

    def __enter__(self):
        gc.collect()
        self.base = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self._rss())
        self.mb = (self.peak - self.base) / 2**20

    def _poll(self):
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            pages = f.read().split()
        return (int(pages[1]) - (int(pages[2]) if self.anonymous else 0)) * os.sysconf("SC_PAGE_SIZE")
