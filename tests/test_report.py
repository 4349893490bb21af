"""Report rendering: every section kind lands in Markdown, HTML (inlined PNGs) and metrics.json."""

import json

import pytest

from xling.errors import XlingError
from xling.report import summary, write_report


def _eval(tmp_path, name, order, metrics, sections):
    d = tmp_path / "eval"
    d.mkdir(exist_ok=True)
    (d / f"{name}.json").write_text(json.dumps({"name": name, "order": order, "metrics": metrics,
                                                "sections": sections}))


def test_report_renders_all_block_kinds(tmp_path):
    _eval(tmp_path, "retrieval", 20, {"retrieval.top1.en-fr": 0.5, "retrieval.top1_mean": 0.5}, [
        {"title": "Retrieval", "blocks": [
            {"kind": "text", "text": "test split <all> verses"},
            {"kind": "heatmap", "name": "retrieval", "rows": ["en", "fr"], "cols": ["en", "fr"],
             "values": [[None, 0.5], [0.25, None]]}]}])
    _eval(tmp_path, "bpc", 10, {"bpc.en": 1.5, "languages": ["en", "fr"]}, [
        {"title": "Bits per character", "blocks": [
            {"kind": "table", "header": ["lang", "bpc"], "rows": [["en", 1.5], ["fr", 1.75]]},
            {"kind": "bar", "name": "bpc", "labels": ["en", "fr"], "values": [1.5, 1.75], "ylabel": "bits"},
            {"kind": "bars", "name": "baselines", "labels": ["en", "fr"], "ylabel": "bits",
             "series": {"model": [1.5, 1.75], "n-gram": [1.25, 1.5], "unigram": [2.5, 2.75]}},
            {"kind": "lines", "name": "loss", "series": {"clm": [[0, 5.0], [10, 3.0]]}}]}])
    out = write_report(tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == {"bpc.en": 1.5, "languages": ["en", "fr"], "retrieval.top1.en-fr": 0.5,
                       "retrieval.top1_mean": 0.5}
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["01_bpc.png", "02_baselines.png", "03_loss.png", "04_retrieval.png"]  # sections by `order`
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000
    md = (out / "report.md").read_text()
    assert md.index("## Bits per character") < md.index("## Retrieval")
    assert "| en   | 1.500 |" in md and "![retrieval](04_retrieval.png)" in md and "![baselines]" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4  # self-contained: no external files
    assert "&lt;all&gt;" in page  # text is escaped


def test_report_without_results(tmp_path):
    with pytest.raises(XlingError, match="run `xling evaluate"):
        write_report(tmp_path)


def test_summary_mean_bpc_leaves_out_the_aggregates(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"stages": {"corpus": {"seconds": 1.0}}}))
    _eval(tmp_path, "bpc", 30, {"bpc.en": 1.5, "bpc.fr": 2.5, "bpc.ratio_unigram_max": 0.9, "bpc.below_ngram": 1,
                                "bpc_baseline.ngram.en": 1.0}, [])
    write_report(tmp_path)
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in summary(tmp_path).splitlines()
            if line.startswith("| ")}
    assert rows["bits per character (mean)"] == "2.000"  # (1.5 + 2.5) / 2: the two aggregates have their own rows
    assert rows["bits per character, model / unigram (worst language)"] == "0.900"
    assert rows["languages where the model is below the n-gram"] == "1"
