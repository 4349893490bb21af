"""Progress bars and plain-text tables for the terminal.

Bars come from tqdm (rate and ETA included) and go to stderr, so stdout stays
clean for tables and machine-readable lines. Set XLING_PROGRESS=0 to hide them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence

from tqdm.auto import tqdm


def progress(iterable: Iterable | None = None, desc: str = "", total: int | None = None,
             unit: str = "it", **kwargs) -> tqdm:
    disable = kwargs.pop("disable", None) or os.environ.get("XLING_PROGRESS", "1") == "0"
    return tqdm(iterable, desc=desc, total=total, unit=unit, unit_scale=True, dynamic_ncols=True,
                disable=disable, file=sys.stderr, **kwargs)


def end_bars() -> None:
    """Close every progress bar still open, ending its line: an error raised inside a loop leaves its bar's
    line unfinished, and the one-line error printed next would be glued to the bar's last fragment."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def format_table(header: Sequence[str], rows: Sequence[Sequence], title: str = "") -> str:
    """A Markdown table (pipes line up in a terminal too); numbers right-aligned."""
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(_is_num(r[i]) for r in rows) and rows for i in range(len(header))]

    def line(r):
        return "| " + " | ".join(c.rjust(w) if numeric[i] else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(r, widths, strict=True))) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if numeric[i] else ("-" * (w + 2))
                         for i, w in enumerate(widths)) + "|"
    out = [title, ""] if title else []
    out += [line(cells[0]), sep] + [line(r) for r in cells[1:]]
    return "\n".join(out)


def _fmt(c) -> str:
    if isinstance(c, float):
        return f"{c:.3f}"
    if isinstance(c, int) and not isinstance(c, bool):
        return f"{c:,}"
    return str(c)


def _is_num(c) -> bool:
    if isinstance(c, int | float) and not isinstance(c, bool):
        return True
    try:
        float(str(c).replace(",", ""))
        return True
    except ValueError:
        return False
