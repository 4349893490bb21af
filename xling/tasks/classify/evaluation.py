"""The demo report's zero-shot transfer evaluation: the Bible genre task with the run's own encoder.

    xling evaluate --run runs/demo --only transfer   # evaluation "transfer" (order 80)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xling.errors import XlingError
from xling.evaluate import EvalContext, evaluation, skipped
from xling.tasks.classify.config import ClassifyConfig
from xling.tasks.classify.data import GENRES, bible_genre_task
from xling.tasks.classify.model import XlingEncoder
from xling.tasks.classify.transfer import heatmap, matrix_table, run_transfer


def _run_cfg(run_dir: Path) -> ClassifyConfig:
    """The run's [classify] section (config.toml), else the defaults."""
    from xling.config import build_section, read_toml

    path = run_dir / "config.toml"
    table = read_toml(path, "the run's config").get("classify", {}) if path.is_file() else {}
    return build_section("classify", ClassifyConfig, table)


@evaluation("transfer", order=80)
def eval_transfer(ctx: EvalContext) -> dict:
    cfg = _run_cfg(ctx.run_dir)
    source = cfg.sources[0] if cfg.sources[0] in ctx.langs else ctx.langs[0]
    try:
        data = bible_genre_task(ctx.corpus, ctx.langs, cfg.max_valid, cfg.max_test)
    except XlingError as e:  # not a Bible corpus: no built-in labels
        return skipped(str(e).rstrip("."), "Zero-shot classification (transfer)")
    res = run_transfer(XlingEncoder(ctx.model, ctx.tokenizer, ctx.langs), data, cfg, mode="zero-shot",
                       sources=[source])
    row, b = res["rows"][0], res["baselines"]
    metrics: dict = {"transfer.gap_mean": row["gap_mean"],
                     "transfer.baseline.majority": b["majority"]["accuracy"][source]}
    for lg in res["test_rows"]:
        metrics[f"transfer.accuracy.{lg}"] = row["accuracy"][lg]["mean"]
        metrics[f"transfer.f1.{lg}"] = row["f1"][lg]["mean"]
        metrics[f"transfer.baseline.names.{lg}"] = b["names"]["accuracy"][lg]
    targets = [row["accuracy"][lg]["mean"] for lg in res["test_rows"] if lg != source]
    others = [lg for lg in res["test_rows"] if lg != source]
    if others:  # the headline's pair: zero-shot accuracy where no label was seen, beside names-only's there
        names = b["names"]["accuracy"]
        metrics["transfer.target_accuracy_mean"] = float(np.mean(targets))
        metrics["transfer.baseline.names_target_mean"] = float(np.mean([names[lg] for lg in others]))
        metrics["transfer.baseline.names_gap_mean"] = float(np.mean([names[source] - names[lg] for lg in others]))
        metrics["transfer.items"] = int(sum(res["test_rows"][lg] for lg in others))
    header, rows = matrix_table(res)
    warn = f" Warning: collapsed to one class: {'; '.join(row['collapsed'])}." if row["collapsed"] else ""
    text = (f"Bible genre classification ({len(GENRES)} classes: {', '.join(GENRES)}; Revelation counted with the "
            f"Prophets), trained on {row['train_rows']:,} {source} verses only and tested on the same "
            f"{max(res['test_rows'].values()):,} held-out test-chapter verses in every language. Classifier: "
            f"{cfg.pooling}-pooled final hidden states -> dropout -> linear head, finetune={cfg.finetune}, AdamW "
            f"lr {cfg.lr}, best of up to {cfg.epochs} epochs chosen on {row['valid_rows']} {source} valid verses "
            f"only; mean over seeds {cfg.seeds} (best epochs {row['best_epochs']}). Mean target accuracy "
            f"{np.mean(targets) if targets else float('nan'):.3f} vs {row['accuracy'][source]['mean']:.3f} in "
            f"{source} (mean gap {row['gap_mean']:.3f}). Names-only = naive Bayes over capitalised non-initial "
            f"words, trained on {source}.{warn} {res['seconds']:.0f} s. {ctx.provenance('test')}.")
    return {"metrics": metrics, "sections": [{"title": "Zero-shot classification (transfer)", "blocks": [
        {"kind": "text", "text": text}, {"kind": "table", "header": header, "rows": rows}, heatmap(res)]}]}


# this package's evaluations, as xling.registry lists them
EVALUATIONS = (eval_transfer,)
