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


# ---------------------------------------------------------------------------- the headline

def _run(tmp_path, evals: dict[str, dict]):
    """A run directory with a manifest and one eval/<name>.json per entry ({"metrics": ...} plus extras)."""
    (tmp_path / "manifest.json").write_text(json.dumps({"stages": {"pretrain": {"seconds": 600.0}}}))
    for order, (name, ev) in enumerate(evals.items()):
        _eval(tmp_path, name, 10 * order, ev.get("metrics", {}), ev.get("sections", []))
        extra = {k: v for k, v in ev.items() if k not in ("metrics", "sections")}
        if extra:
            path = tmp_path / "eval" / f"{name}.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), **extra}))
    write_report(tmp_path)
    return tmp_path


def _table_rows(text: str) -> dict[str, list[str]]:
    """{metric: [ours, baseline, what, items]} of the headline table in a summary."""
    block = text.split("Headline numbers (test split)")[1].split("\n\n")[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[2:]]
    return {r[0]: r[1:] for r in rows}


LANGS = {"tokenizer": {"metrics": {"languages": ["en", "fr", "ru"]}}}
FULL = {
    "pretrain": {"metrics": {"pretrain.steps": 1261, "pretrain.tokens": 5_000_000,
                             "pretrain.tokens_per_second": 8300.0}},
    "bpc": {"metrics": {"bpc.en": 2.0, "bpc.fr": 2.2, "bpc.ru": 2.9, "bpc.items": 60_000,
                        "bpc.ratio_unigram_max": 0.8,  # not a language: never averaged in
                        "bpc_baseline.ngram.en": 2.1, "bpc_baseline.ngram.fr": 2.4,  # no ru: compared on en, fr
                        "bpc_baseline.unigram.en": 2.6, "bpc_baseline.unigram.fr": 2.8,
                        "bpc_baseline.unigram.ru": 3.3}},
    "retrieval": {"metrics": {"retrieval.top1.en-fr": 0.6, "retrieval.top1.fr-en": 0.7, "retrieval.top1.en-ru": 0.5,
                              "retrieval.top1.ru-en": 0.6, "retrieval.top1_mean": 0.6, "retrieval.chance": 0.001,
                              "retrieval.items": 4000}},
    # the peer covers fr only: ours is put beside it on fr
    "peer": {"metrics": {"peer.retrieval.top1.en-fr": 0.9, "peer.retrieval.top1.fr-en": 0.94,
                         "peer.retrieval.top1_mean": 0.92, "peer.mining.f1.en-fr": 0.9, "peer.mining.f1_mean": 0.9}},
    "mining": {"metrics": {"mining.f1.en-fr": 0.69, "mining.f1.en-ru": 0.5, "mining.f1_mean": 0.595,
                           "mining.items": 2000}},
    "translation": {"metrics": {"mt.bleu.en-fr": 16.0, "mt.bleu.fr-en": 18.0, "mt.rnn_bleu.en-fr": 8.0,
                                "mt.rnn_bleu.fr-en": 10.0, "mt.items": 400, "mt.finetune_steps": 1900}},
}


def test_headline_puts_the_baseline_beside_ours(tmp_path):

    text = summary(_run(tmp_path, {**LANGS, **FULL}))
    rows = _table_rows(text)
    bpc = rows["bits per character (mean over languages; lower is better)"]
    # like for like: ours and both baselines over en and fr, the languages the n-gram baseline has
    assert bpc == ["2.100", "2.250 / 2.700", "n-gram model, same train split / unigram model, same train split",
                   "60,000"]
    assert rows["bits per character, worst language / its unigram"][:2] == ["0.800", "1.000"]
    assert rows["retrieval top-1 en<->X (mean)"] == [
        "0.650", "0.920 / 0.001", "multilingual USE v3 (peer); both on its languages / chance (1 in the candidates)",
        "4,000"]
    assert rows["bitext mining F1 (mean)"][:2] == ["0.690", "0.900"]
    assert rows["translation BLEU (mean over directions)"][:2] == ["17.00", "9.00"]
    assert rows["pretraining"] == ["1,261 steps, 5,000,000 tokens, 8,300 tokens/s", "-", "-", "-"]
    for metric, (_ours, base, what, items) in rows.items():  # every number has its reference and its count
        assert metric == "pretraining" or (base and what and int(items.replace(",", "")) >= 100)
    md = (tmp_path / "report" / "report.md").read_text()
    assert md.index("## Headline numbers") == md.index("## ") and "| what that baseline is" in md  # first section
    assert "0.920 / 0.001" in (tmp_path / "report" / "report.html").read_text()


def test_a_row_is_absent_when_its_keys_are(tmp_path):

    evals = {**LANGS, **FULL}
    del evals["peer"]  # no peer: retrieval keeps chance, mining has nothing to stand beside
    evals["bpc"] = {"metrics": {"bpc.en": 2.0, "bpc.items": 60_000}}  # the baselines' keys are missing
    text = summary(_run(tmp_path, evals))
    rows = _table_rows(text)
    assert rows["retrieval top-1 en<->X (mean)"][:3] == ["0.600", "0.001", "chance (1 in the candidates)"]  # all
    assert not any(m.startswith(("bitext mining", "bits per character", "generation", "zero-shot", "lexicon"))
                   for m in rows)
    left_out = text.split("Left out of the headline:")[1]
    assert "bitext mining F1 (mean): no baseline or peer measured in this run" in left_out
    assert "bits per character (mean over languages; lower is better): no baseline" in left_out


def test_too_few_items_or_a_smoke_test_budget_keep_a_row_out(tmp_path):
    from xling.report import MT_MIN_STEPS, headline

    metrics = {k: v for ev in FULL.values() for k, v in ev["metrics"].items()}
    metrics.update({"retrieval.items": 99, "mt.finetune_steps": 52})
    rows, left_out = headline(metrics)
    labels = [r[0] for r in rows]
    assert "retrieval top-1 en<->X (mean)" not in labels and "translation BLEU (mean over directions)" not in labels
    assert "retrieval top-1 en<->X (mean): 99 test items, fewer than 100" in left_out
    assert any(s.startswith("translation BLEU") and "smoke test" in s for s in left_out)
    del metrics["mining.items"]  # a number whose item count is unknown is not checkable: out
    rows, left_out = headline(metrics)
    assert "bitext mining F1 (mean)" not in [r[0] for r in rows]
    metrics.update({"retrieval.items": 100, "mt.finetune_steps": MT_MIN_STEPS})
    labels = [r[0] for r in headline(metrics)[0]]
    assert "retrieval top-1 en<->X (mean)" in labels and "translation BLEU (mean over directions)" in labels


def test_a_skipped_evaluation_never_appears_as_a_number(tmp_path):

    reason = "no dictionary for en-fr; `apt-get install dict-freedict-eng-fra`"
    evals = {**LANGS, **FULL,
             # a skipped evaluation whose file still holds numbers (written by hand or by an old version)
             "align": {"metrics": {"align.p_at_1.en-fr": 0.0, "align.p_at_1.en-fr.copy": 0.0, "align.items": 7},
                       "skipped": reason,
                       "sections": [{"title": "Lexicon induction", "blocks": [
                           {"kind": "text", "text": f"Skipped: {reason}."}]}]},
             "transfer": {"metrics": {"transfer.target_accuracy_mean": 0.5, "transfer.items": 3000,
                                      "transfer.baseline.names_target_mean": 0.3}, "skipped": "not a Bible corpus"}}
    run = _run(tmp_path, evals)
    text = summary(run)
    table = text.split("Headline numbers (test split)")[1].split("Left out")[0].split("Skipped")[0]
    assert "lexicon" not in table and "zero-shot" not in table and "0.000" not in table
    assert f"align: {reason}" in text and "transfer: not a Bible corpus" in text
    assert "evaluate: align (skipped)" in text
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    assert not any(k.startswith(("align.", "transfer.")) for k in metrics)
    md = (run / "report" / "report.md").read_text()
    assert f"Skipped (no number on this machine): align: {reason}" in md


def test_run_evaluations_drops_the_numbers_of_a_skipped_evaluation(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from xling import evaluate

    def fake(ctx):  # skipped, yet it returns a number: the driver must not keep it
        return {**evaluate.skipped("no data here; install it"), "metrics": {"fake.score": 0.0}}

    ctx = SimpleNamespace(run_dir=tmp_path, step=3)
    assert evaluate.run_evaluations(ctx, {"fake": (5, fake)}, only=["fake"]) == {}
    saved = json.loads((tmp_path / "eval" / "fake.json").read_text())
    assert saved["metrics"] == {} and saved["skipped"] == "no data here; install it"
    assert saved["sections"][0]["blocks"][0]["text"] == "Skipped: no data here; install it."


def test_every_headline_row_is_well_formed():
    from xling.report import HEADLINES

    labels = [h.label for h in HEADLINES]
    assert len(labels) == len(set(labels))
    for h in HEADLINES:
        assert isinstance(h.ours, tuple) or (h.refs and h.items), h.label  # info rows only go without both
        assert not any(k.startswith("langid.") for k in (h.ours if isinstance(h.ours, tuple) else (h.ours,)))
