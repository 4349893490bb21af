"""Results -> a report a person would rather look at: Markdown, self-contained HTML, PNG plots.

    xling report runs/demo          # reads runs/demo/eval/*.json, writes runs/demo/report/
    write_report("runs/demo")       # the same from Python

Every evaluation (see `xling.evaluate`) saves one `eval/<name>.json` holding its flat metrics and a list
of *sections*: titled blocks of text, tables and plots described as data. This module renders any such
section generically, so a new evaluation needs no change here:

    {"title": "Bits per character", "blocks": [
        {"kind": "text", "text": "valid split, checkpoint step 1200"},
        {"kind": "table", "header": ["lang", "bpc"], "rows": [["en", 1.91], ...]},
        {"kind": "bar", "name": "bpc", "labels": ["en", ...], "values": [1.91, ...], "ylabel": "bits/char"},
        {"kind": "bars", "name": "bpc", "labels": ["en", ...], "series": {"model": [1.91, ...],
         "unigram": [2.65, ...]}, "ylabel": "bits/char"},       # grouped: one bar per series in each label
        {"kind": "heatmap", "name": "retrieval", "rows": [...], "cols": [...], "values": [[...]]},
        {"kind": "lines", "name": "loss", "series": {"clm": [[x, y], ...]}, "xlabel": "step", "ylabel": "loss"}]}

Outputs in `<run>/report/`: metrics.json (all flat metrics, machine-readable), report.md (with PNG links),
report.html (PNGs inlined, opens offline in a browser) and the PNG files.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from xling.errors import XlingError
from xling.files import atomic_dir, atomic_write_json
from xling.progress import format_table

PLOT_KINDS = ("bar", "bars", "heatmap", "lines")


def load_sections(run_dir: Path) -> tuple[dict, list[dict]]:
    """All eval/*.json of a run, in the order their `order` field (then name) gives."""
    eval_dir = Path(run_dir) / "eval"
    files = sorted(eval_dir.glob("*.json")) if eval_dir.is_dir() else []
    if not files:
        raise XlingError(f"no evaluation results in {eval_dir}; run `xling evaluate {run_dir}` first")
    results = []
    for f in files:
        try:
            results.append(json.loads(f.read_text(encoding="utf-8")))
        except json.JSONDecodeError:
            raise XlingError(f"{f} is not valid JSON; re-run `xling evaluate {run_dir}`") from None
    results.sort(key=lambda r: (r.get("order", 100), r.get("name", "")))
    metrics: dict = {}
    sections: list[dict] = []
    for r in results:
        metrics.update(r.get("metrics", {}))
        sections.extend(r.get("sections", []))
    return metrics, sections


def plot(block: dict, path: Path) -> None:
    """Draw one plot block to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kind = block["kind"]
    if kind == "heatmap":
        rows, cols = block["rows"], block["cols"]
        fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(cols), 0.8 + 0.55 * len(rows)))
        vals = [[math.nan if v is None else v for v in r] for r in block["values"]]
        im = ax.imshow(vals, cmap=block.get("cmap", "viridis"), vmin=block.get("vmin", 0.0),
                       vmax=block.get("vmax", 1.0), aspect="auto")
        ax.set_xticks(range(len(cols)), cols)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel(block.get("xlabel", ""))
        ax.set_ylabel(block.get("ylabel", ""))
        for i, r in enumerate(vals):
            for j, v in enumerate(r):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if v < 0.6 * block.get("vmax", 1.0) else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    elif kind == "bar":
        labels, values = block["labels"], block["values"]
        fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(labels) + 1.5), 3.2))
        bars = ax.bar(labels, values, color="#4C72B0")
        if block.get("reference") is not None:
            ax.axhline(block["reference"], color="#C44E52", linestyle="--", linewidth=1,
                       label=block.get("reference_label", ""))
            if block.get("reference_label"):
                ax.legend(loc="best", fontsize=8)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_ylabel(block.get("ylabel", ""))
    elif kind == "bars":
        labels, series = block["labels"], block["series"]
        width = 0.8 / max(len(series), 1)  # the series of one label share 80% of its slot
        fig, ax = plt.subplots(figsize=(max(4.5, 0.35 * len(labels) * len(series) + 1.5), 3.4))
        for i, (name, values) in enumerate(series.items()):
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
            bars = ax.bar(xs, values, width, label=name)
            ax.bar_label(bars, fmt="%.2f", fontsize=6)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_ylabel(block.get("ylabel", ""))
        ax.legend(loc="best", fontsize=8)
    elif kind == "lines":
        fig, ax = plt.subplots(figsize=(6.0, 3.4))
        for name, pts in block["series"].items():
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, label=name, linewidth=1.2)
        ax.set_xlabel(block.get("xlabel", ""))
        ax.set_ylabel(block.get("ylabel", ""))
        if block.get("logy"):
            ax.set_yscale("log")
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    else:
        raise ValueError(f"unknown plot kind {kind}")
    ax.set_title(block.get("title", ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _md_block(block: dict, png: str | None) -> str:
    kind = block["kind"]
    if kind == "text":
        return block["text"]
    if kind == "table":
        return format_table(block["header"], block["rows"])
    if kind in PLOT_KINDS:
        return f"![{block.get('title') or block['name']}]({png})"
    if kind == "code":
        return "```\n" + block["text"] + "\n```"
    raise ValueError(f"unknown block kind {kind}")


def _html_table(block: dict) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in block["header"])
    body = []
    for r in block["rows"]:
        cells = []
        for c in r:
            text = f"{c:.3f}" if isinstance(c, float) else (f"{c:,}" if isinstance(c, int) else str(c))
            cls = ' class="num"' if isinstance(c, int | float) else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html_block(block: dict, png_path: Path | None) -> str:
    kind = block["kind"]
    if kind == "text":
        return f"<p>{html.escape(block['text'])}</p>"
    if kind == "table":
        return _html_table(block)
    if kind == "code":
        return f"<pre>{html.escape(block['text'])}</pre>"
    data = base64.b64encode(png_path.read_bytes()).decode()
    alt = html.escape(block.get("title") or block["name"])
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'


CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;white-space:pre-wrap}h2{border-bottom:1px solid #ddd}"""


def write_report(run_dir: str | Path, title: str | None = None) -> Path:
    """Render `<run>/eval/*.json` into `<run>/report/`; returns the report directory."""
    run_dir = Path(run_dir)
    metrics, sections = load_sections(run_dir)
    title = title or f"xling report: {run_dir.name}"
    with atomic_dir(run_dir / "report") as out:
        md = [f"# {title}", ""]
        body = [f"<h1>{html.escape(title)}</h1>"]
        n_plot = 0
        for sec in sections:
            md += [f"## {sec['title']}", ""]
            body.append(f"<h2>{html.escape(sec['title'])}</h2>")
            for block in sec["blocks"]:
                png = None
                if block["kind"] in PLOT_KINDS:
                    n_plot += 1
                    png = out / f"{n_plot:02d}_{block['name']}.png"
                    plot(block, png)
                md += [_md_block(block, png.name if png else None), ""]
                body.append(_html_block(block, png))
        (out / "report.md").write_text("\n".join(md), encoding="utf-8")
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
        (out / "report.html").write_text(page, encoding="utf-8")
        atomic_write_json(out / "metrics.json", metrics)
    return run_dir / "report"


HEADLINES = [  # (label, metrics.json key or key prefix to average, format)
    ("pretraining tokens", "pretrain.tokens", "{:,.0f}"),
    ("tokens/s", "pretrain.tokens_per_second", "{:,.0f}"),
    ("bits per character (mean)", "bpc.", "{:.3f}"),
    ("bits per character, model / unigram (worst language)", "bpc.ratio_unigram_max", "{:.3f}"),
    ("languages where the model is below the n-gram", "bpc.below_ngram", "{:.0f}"),
    ("retrieval top-1 en<->X (mean)", "retrieval.top1_mean", "{:.3f}"),
    ("retrieval top-1, peer USE v3 (its languages)", "peer.retrieval.top1_mean", "{:.3f}"),
    ("mining F1 (mean)", "mining.f1_mean", "{:.3f}"),
    ("language id accuracy (mean)", "langid.accuracy.", "{:.3f}"),
    ("generation: py3langid finds the prompt's language", "generation.langid_mean", "{:.2f}"),
    ("generation: letters in the language's script", "generation.script_purity_mean", "{:.2f}"),
    ("generation: lexical validity (unigram sample 0, human 1)", "generation.lexical_position_mean", "{:.2f}"),
    ("generation: repeated word 3-grams (mean)", "generation.repetition.", "{:.2f}"),
    ("BLEU Transformer (mean)", "mt.bleu.", "{:.2f}"),
    ("BLEU RNN baseline (mean)", "mt.rnn_bleu.", "{:.2f}"),
    ("zero-shot transfer gap (mean)", "transfer.gap_mean", "{:.3f}"),
    ("lexicon induction P@1 en-fr", "align.p_at_1.en-fr", "{:.3f}"),
]


def summary(run_dir: str | Path) -> str:
    """The demo's closing terminal summary: wall-clock seconds per stage and evaluation, headline metrics."""
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    rows = [[name, f"{info.get('seconds', 0):.1f}"] for name, info in manifest.get("stages", {}).items()]
    evals = [json.loads(p.read_text(encoding="utf-8")) for p in (run_dir / "eval").glob("*.json")]
    for ev in sorted(evals, key=lambda e: e["order"]):
        rows.append([f"evaluate: {ev['name']}", f"{ev.get('seconds', 0):.1f}"])
    out = format_table(["stage", "seconds"], rows, title="Where the time went")
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text(encoding="utf-8"))
    lines = []
    named = {key for _, key, _ in HEADLINES}  # a key with a headline of its own is not averaged into a prefix
    for label, key, fmt in HEADLINES:
        vals = [v for k, v in metrics.items() if (k == key or (key.endswith(".") and k.startswith(key)
                                                                and k.count(".") == key.count(".") and k not in named))
                and isinstance(v, int | float)]
        if vals:
            lines.append([label, fmt.format(sum(vals) / len(vals))])
    return out + "\n\n" + format_table(["metric", "value"], lines, title="Headline numbers (test split)")
