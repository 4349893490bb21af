"""Results -> a report a person would rather look at: Markdown, self-contained HTML, PNG plots.

    xling report --run runs/demo    # reads runs/demo/eval/*.json, writes runs/demo/report/
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
from dataclasses import dataclass
from pathlib import Path

from xling.errors import XlingError
from xling.files import atomic_dir, atomic_write_json
from xling.langs import check_lang
from xling.progress import format_table

PLOT_KINDS = ("bar", "bars", "heatmap", "lines")


def load_sections(run_dir: Path) -> tuple[dict, list[dict]]:
    """All eval/*.json of a run, in the order their `order` field (then name) gives."""
    eval_dir = Path(run_dir) / "eval"
    files = sorted(eval_dir.glob("*.json")) if eval_dir.is_dir() else []
    if not files:
        raise XlingError(f"no evaluation results in {eval_dir}; run `xling evaluate --run {run_dir}` first")
    results = []
    for f in files:
        try:
            results.append(json.loads(f.read_text(encoding="utf-8")))
        except json.JSONDecodeError:
            raise XlingError(f"{f} is not valid JSON; re-run `xling evaluate --run {run_dir}`") from None
    results.sort(key=lambda r: (r.get("order", 100), r.get("name", "")))
    metrics: dict = {}
    sections: list[dict] = []
    for r in results:
        if not r.get("skipped"):  # a skipped evaluation has no number, whatever its file holds
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
    # the headline first: each number beside its baseline or peer, what stayed out and what was skipped
    sections = [{"title": "Headline numbers", "blocks": headline_blocks(metrics, load_results(run_dir))}, *sections]
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


# ---------------------------------------------------------------------------- the headline

MIN_ITEMS = 100  # a number from fewer test items moves by a point or more with one item: not a headline
# A translation fine-tune of fewer optimizer steps is a smoke test: its BLEU says the recipe runs, not how well
# either system translates (the demo's 20 s give ~50 steps, and there the RNN "wins"; the README's comparisons
# rest on 1,500-2,400 steps). Steps, not minutes: a GPU does in one minute what 2 CPU cores do in ten.
MT_MIN_STEPS = 1000


@dataclass(frozen=True)
class Headline:
    """One row of the headline: our number beside its baseline(s) or peer(s), and the test items behind it.

    `ours` and each ref's key are metrics.json keys; `{lang}` stands for each of the run's languages and
    `{pair}` for each `a-b` of them, and such a row shows the mean over the languages (pairs) that ours and
    every present ref have, like for like. A ref may also be a number (e.g. 1.0, the unigram model itself).
    The row is shown only when ours, at least one ref, `items` >= MIN_ITEMS and every `needs` are there; a row
    without refs or items is plain information (ours may then be a tuple of keys, all given to fmt)."""
    label: str
    ours: str | tuple[str, ...]
    refs: tuple[tuple[str | float, str], ...] = ()  # (key, pattern or number; what that baseline or peer is)
    items: str = ""  # key of the number of test items behind ours (summed over a {lang}/{pair} pattern)
    fmt: str = "{:.3f}"
    needs: tuple[tuple[str, float, str], ...] = ()  # (key, minimum, what a smaller value makes the number)


HUMAN, UNIGRAM = "human test text", "text sampled from the unigram model"
# the peer covers 5 of the demo's 7 pairs (not fa, vi): per-pair patterns put ours on the same pairs
PEER_ON_ITS_LANGS = "multilingual USE v3 (peer); both on its languages"
HEADLINES: tuple[Headline, ...] = (
    Headline("pretraining", ("pretrain.steps", "pretrain.tokens", "pretrain.tokens_per_second"),
             fmt="{:,.0f} steps, {:,.0f} tokens, {:,.0f} tokens/s"),
    Headline("bits per character (mean over languages; lower is better)", "bpc.{lang}",
             (("bpc_baseline.ngram.{lang}", "n-gram model, same train split"),
              ("bpc_baseline.unigram.{lang}", "unigram model, same train split")), items="bpc.items"),
    Headline("bits per character, worst language / its unigram", "bpc.ratio_unigram_max",
             ((1.0, "the unigram model itself"),), items="bpc.items"),
    Headline("retrieval top-1 en<->X (mean)", "retrieval.top1.{pair}",
             (("peer.retrieval.top1.{pair}", PEER_ON_ITS_LANGS), ("retrieval.chance", "chance (1 in the candidates)")),
             items="retrieval.items"),
    # mining has no baseline of its own (xling/tasks/retrieval/mine.py); chance (~1 / verses) would flatter any number,
    # so without the peer the row stays out
    Headline("bitext mining F1 (mean)", "mining.f1.{pair}", (("peer.mining.f1.{pair}", PEER_ON_ITS_LANGS),),
             items="mining.items"),
    # another domain than the Bible the demo trains on (tasks/retrieval/ood.py): items = aligned strings per language
    Headline("out-of-domain retrieval top-1 en<->X, Django UI strings (mean)", "ood.retrieval.top1.{pair}",
             (("ood.peer.retrieval.top1.{pair}", PEER_ON_ITS_LANGS),
              ("ood.retrieval.chance", "chance (1 in the candidates)")), items="ood.items"),
    Headline("generation: external language ID agrees with the prompt", "generation.langid_mean",
             (("generation.langid_human_mean", HUMAN), ("generation.langid_unigram_mean", UNIGRAM)),
             items="generation.items"),
    Headline("generation: letters in the language's script", "generation.script_purity_mean",
             (("generation.script_purity_human_mean", HUMAN), ("generation.script_purity_unigram_mean", UNIGRAM)),
             items="generation.items"),
    Headline("generation: words found in the language's word list", "generation.lexical_mean",
             (("generation.lexical_human_mean", HUMAN), ("generation.lexical_unigram_mean", UNIGRAM)),
             items="generation.items"),
    Headline("zero-shot genre accuracy, languages without labels (mean)", "transfer.target_accuracy_mean",
             (("transfer.baseline.names_target_mean", "names-only classifier, same labels"),
              ("transfer.baseline.majority", "majority class")), items="transfer.items"),
    Headline("zero-shot transfer gap, source minus others (lower is better)", "transfer.gap_mean",
             (("transfer.baseline.names_gap_mean", "names-only classifier's gap"),), items="transfer.items"),
    Headline("translation BLEU (mean over directions)", "mt.bleu.{pair}",
             (("mt.rnn_bleu.{pair}", "RNN encoder-decoder, same data and minutes"),), items="mt.items", fmt="{:.2f}",
             needs=(("mt.finetune_steps", MT_MIN_STEPS, "a smoke test, not a quality measurement"),)),
    Headline("lexicon induction P@1 en->X (CSLS, mean over pairs)", "align.p_at_1.{pair}",
             (("align.p_at_1.{pair}.copy", "copying the word itself"),), items="align.items"),
)


def _is_lang(code: str, langs: list[str] | None) -> bool:
    if langs:
        return code in langs
    try:
        check_lang(code)
        return True
    except XlingError:
        return False


def _matches(pattern: str, metrics: dict, langs: list[str] | None) -> dict[str, float]:
    """{substitution: value} of the numeric metrics a key pattern names ("" for a plain key)."""
    if "{" not in pattern:
        v = metrics.get(pattern)
        return {"": v} if _number(v) else {}
    parts = pattern.split(".")
    out = {}
    for key, v in metrics.items():
        ks = key.split(".")
        if len(ks) != len(parts) or not _number(v):
            continue
        sub = None
        for p, k in zip(parts, ks, strict=True):
            if p == "{lang}" and _is_lang(k, langs):
                sub = k
            elif p == "{pair}" and k.count("-") == 1 and all(_is_lang(x, langs) for x in k.split("-")):
                sub = k
            elif p != k:
                break
        else:
            out[sub] = float(v)
    return out


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def headline(metrics: dict) -> tuple[list[list], list[str]]:
    """The headline rows [metric, ours, baseline or peer, what it is, items] and, for each row whose number
    exists but stays out, why (no baseline, too few items, a smoke-test budget)."""
    langs = metrics.get("languages") if isinstance(metrics.get("languages"), list) else None
    rows, left_out = [], []
    for h in HEADLINES:
        if isinstance(h.ours, tuple):  # an information row: every key or nothing
            vals = [metrics.get(k) for k in h.ours]
            if all(_number(v) for v in vals):
                rows.append([h.label, h.fmt.format(*vals), "-", "-", "-"])
            continue
        ours = _matches(h.ours, metrics, langs)
        if not ours:
            continue
        found = [(ref, what, _matches(ref, metrics, langs) if isinstance(ref, str) else None) for ref, what in h.refs]
        found = [f for f in found if f[2] is None or f[2]]  # constants, and refs this run measured
        common = set(ours)
        for ref, _, vals in found:
            if vals is not None and "{" in h.ours and "{" in ref:  # like for like: the languages both have
                common &= set(vals)
        if not found or not common:
            left_out.append(f"{h.label}: no baseline or peer measured in this run")
            continue
        why = _left_out(h, metrics)
        if why:
            left_out.append(f"{h.label}: {why}")
            continue
        mean = _mean([ours[k] for k in common])
        refs = [ref if vals is None else _mean([vals.get(k, vals.get("")) for k in common]) for ref, _, vals in found]
        rows.append([h.label, h.fmt.format(mean), " / ".join(h.fmt.format(v) for v in refs),
                     " / ".join(what for _, what, _ in found), f"{int(metrics[h.items]):,}"])
    return rows, left_out


def _left_out(h: Headline, metrics: dict) -> str:
    """Why a row whose numbers exist stays out of the headline ("" if it does not)."""
    n = metrics.get(h.items)
    if not _number(n):
        return f"no count of test items ({h.items}) to check it against {MIN_ITEMS}"
    if n < MIN_ITEMS:
        return f"{int(n)} test items, fewer than {MIN_ITEMS}"
    for key, least, what in h.needs:
        v = metrics.get(key)
        if not _number(v) or v < least:
            return f"{what} ({key} {v if v is not None else 'missing'}, at least {least:,} needed)"
    return ""


def load_results(run_dir: str | Path) -> list[dict]:
    """Every eval/*.json of a run (empty list if none), in evaluation order."""
    files = sorted((Path(run_dir) / "eval").glob("*.json"))
    results = [json.loads(p.read_text(encoding="utf-8")) for p in files]
    return sorted(results, key=lambda r: (r.get("order", 100), r.get("name", "")))


def skipped_lines(results: list[dict]) -> list[str]:
    """"name: reason" for every evaluation (or part of one) that was skipped: reported, never as a number."""
    out = [f"{r['name']}: {r['skipped']}" for r in results if r.get("skipped")]
    for r in results:
        out += [f"{r['name']} {part}: {why}" for part, why in r.get("skipped_parts", {}).items()]
    return out


def headline_blocks(metrics: dict, results: list[dict]) -> list[dict]:
    """The headline as report blocks: the table, then what stayed out of it and what was skipped."""
    rows, left_out = headline(metrics)
    blocks: list[dict] = []
    if rows:
        blocks.append({"kind": "table", "header": HEADLINE_HEADER, "rows": rows})
    else:
        blocks.append({"kind": "text", "text": "No headline number: no evaluation here has a baseline or peer "
                                               f"beside it and {MIN_ITEMS}+ test items."})
    blocks.append({"kind": "text", "text": f"Each number is on the held-out test split (an out-of-domain row: on "
                                           f"text of another domain, never trained on), beside a baseline or peer "
                                           f"measured on the same items (a mean over languages or pairs "
                                           f"covers those that ours and the reference share); items = test items "
                                           f"behind ours (at least {MIN_ITEMS}); values separated by / go with "
                                           f"the descriptions in the same order."})
    if left_out:
        blocks.append({"kind": "text", "text": "Left out of the headline: " + "; ".join(left_out) + "."})
    skipped = skipped_lines(results)
    if skipped:
        blocks.append({"kind": "text", "text": "Skipped (no number on this machine): " + "; ".join(skipped) + "."})
    return blocks


HEADLINE_HEADER = ["metric", "ours", "baseline or peer", "what that baseline is", "items"]


def summary(run_dir: str | Path) -> str:
    """The demo's closing terminal summary: wall-clock seconds per stage and evaluation, then the headline."""
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    rows = [[name, f"{info.get('seconds', 0):.1f}"] for name, info in manifest.get("stages", {}).items()]
    results = load_results(run_dir)
    for ev in results:
        rows.append([f"evaluate: {ev['name']}" + (" (skipped)" if ev.get("skipped") else ""),
                     f"{ev.get('seconds', 0):.1f}"])
    out = format_table(["stage", "seconds"], rows, title="Where the time went")
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text(encoding="utf-8"))
    head, left_out = headline(metrics)
    out += "\n\n" + format_table(HEADLINE_HEADER, head, title="Headline numbers (test split)")
    skipped = skipped_lines(results)
    for title, lines in (("Left out of the headline", left_out), ("Skipped (no number on this machine)", skipped)):
        if lines:
            out += f"\n\n{title}:\n" + "\n".join(f"  - {line}" for line in lines)
    return out
