"""The demo report's machine-translation evaluation: fine-tune (cached), decode the test verses, BLEU and chrF
beside the RNN baseline trained for the same wall-clock time.

    xling evaluate --run runs/demo --only translation   # evaluation "translation" (order 70)
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import asdict, replace

import numpy as np
import torch

from xling.errors import XlingError
from xling.evaluate import EvalContext, evaluation
from xling.evaluate import skipped as eval_skipped  # (`skipped` counts pairs here)
from xling.files import atomic_write_json
from xling.metrics import bleu, chrf
from xling.precision import for_precision
from xling.progress import progress
from xling.report import MT_MIN_STEPS
from xling.tasks.translate.cache import cached_finetune, finetune_key
from xling.tasks.translate.command import run_config
from xling.tasks.translate.config import TranslateConfig
from xling.tasks.translate.decoding import max_source_tokens, translate_ids
from xling.tasks.translate.finetune import finetune


def _test_set(ctx: EvalContext, a: str, b: str, n: int) -> tuple[list[np.ndarray], list[str], list[str]]:
    """(source ids, source texts, reference texts) of n test pairs spread evenly over the test chapters."""
    rows = np.asarray(ctx.shards.pairs("test", a, b))
    if n and len(rows) > n:
        rows = rows[np.unique(np.linspace(0, len(rows) - 1, n).round().astype(int))]
    ta, tb = ctx.corpus.texts("test", a), ctx.corpus.texts("test", b)
    src_ids = [np.asarray(ctx.shards.segment("test", a, int(i)), np.int64) for i, _ in rows]
    return src_ids, [ta[i] for i, _ in rows], [tb[j] for _, j in rows]


def _rnn_outputs(ctx: EvalContext, cfg: TranslateConfig, key: str, minutes: float, tests: dict) -> tuple:
    """The RNN baseline's test translations per direction and its training summary.

    Trained for `minutes` on the same train pairs; the weights are cached in `<run>/translate/rnn/` under
    the fine-tune's key and budget, so a re-run only decodes.
    """
    from xling.tasks.translate import rnn

    path, info = ctx.run_dir / "translate" / "rnn", ctx.run_dir / "translate" / "rnn.json"
    # "auto" precision, as the Transformer's fine-tune: equal wall-clock, equal footing. Each
    # system keeps its measured better label smoothing (TranslateConfig: 0.1, RNNConfig: none)
    rnn_cfg = rnn.RNNConfig(precision="auto")
    want = {"key": key, "minutes": round(minutes, 4), "config": asdict(rnn_cfg)}
    saved = json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {}
    model = None
    if saved.get("want") == want:
        try:
            model, summary = rnn.load_rnn(path), saved["summary"]
        except XlingError:
            model = None
    if model is None:
        model, summary = rnn.train_rnn(ctx.shards, cfg.pairs(), rnn_cfg, minutes=minutes,
                                          seed=cfg.seed)
        rnn.save_rnn(model, path)
        atomic_write_json(info, {"want": want, "summary": summary})
    hyps = {}
    for d, (ids, _, _) in tests.items():
        a, b = d.split("-")
        out = rnn.translate_ids(model, ids, b, num_beams=cfg.num_beams, src_lang_tag=a,
                                   length_penalty=cfg.length_penalty, no_repeat_ngram=cfg.no_repeat_ngram,
                                   max_new_tokens=cfg.max_new_tokens or int(1.5 * max(map(len, ids))) + 10)
        hyps[d] = [" ".join(ctx.tokenizer.decode(o, skip_special_tokens=True).split()) for o in out]
    return hyps, summary


def _short(text: str, n: int = 160) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


@evaluation("translation", order=70)
def eval_translation(ctx: EvalContext) -> dict:
    from xling.tokenizer import tokenizer_hash

    cfg = run_config(ctx.run_dir)
    dirs = [f"{a}-{b}" for a, b in cfg.pairs() if a in ctx.langs and b in ctx.langs]
    if not dirs:
        return eval_skipped(f"none of translate.directions ({', '.join(cfg.directions)}) is between this run's "
                            f"languages", "Machine translation")
    cfg = replace(cfg, directions=dirs)  # the run's languages only
    sha = tokenizer_hash(ctx.run_dir / "tokenizer")
    key = finetune_key(cfg, ctx.step, sha, ctx.model.cfg)
    out_dir = ctx.run_dir / "translate"
    model = copy.deepcopy(ctx.model)
    ckpt = cached_finetune(out_dir, key)
    if ckpt is not None:
        model.load_state_dict(ckpt.model_state)
        summary = ckpt.config["summary"]
    else:
        model, summary = finetune(model, ctx.shards, cfg, out_dir=out_dir, tokenizer_sha256=sha, cache_key=key)
    model = for_precision(model.eval(), cfg.precision)
    tests = {d: _test_set(ctx, *d.split("-"), cfg.test_sentences) for d in dirs}
    hyps, n_cut = {}, 0
    for d, (ids, _, _) in progress(tests.items(), desc="translate test", total=len(tests), unit="dir"):
        a, b = d.split("-")
        n_cut += sum(len(x) > max_source_tokens(model.cfg.block_size, cfg) for x in ids)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # counted above and said in the report
            out = translate_ids(model, [list(x) for x in ids], ctx.shards.lang_token_ids[a],
                                ctx.shards.lang_token_ids[b], cfg,
                                lang_index=(ctx.langs.index(a), ctx.langs.index(b)))
        hyps[d] = [" ".join(ctx.tokenizer.decode(o, skip_special_tokens=True).split()) for o in out]
    rnn_hyps, rnn_summary = {}, {}
    if cfg.rnn_baseline:
        with torch.autocast("cpu", enabled=False):  # the RNN sets its own precision (evaluate() wraps us in bf16)
            rnn_hyps, rnn_summary = _rnn_outputs(ctx, cfg, key, summary["minutes"], tests)
    metrics, rows, examples, sigs = {}, [], [], {}
    for d, (_, srcs, refs) in tests.items():
        tgt = d.split("-")[1]
        (b, sigs["bleu"]), (c, sigs["chrf"]) = bleu(hyps[d], refs, tgt), chrf(hyps[d], refs)
        metrics[f"mt.bleu.{d}"], metrics[f"mt.chrf.{d}"] = b, c
        rb = rc = "-"
        if d in rnn_hyps:
            rb, rc = bleu(rnn_hyps[d], refs, tgt)[0], chrf(rnn_hyps[d], refs)[0]
            metrics[f"mt.rnn_bleu.{d}"], metrics[f"mt.rnn_chrf.{d}"] = rb, rc
        rows.append([d, b, c, rb, rc, len(refs)])
        for i in np.unique(np.linspace(0, len(refs) - 1, 3).round().astype(int)):
            examples.append([d, _short(srcs[i]), _short(refs[i]), _short(hyps[d][i]),
                             _short(rnn_hyps[d][i]) if d in rnn_hyps else "-"])
    # the budget behind the numbers: the report's headline shows BLEU only from a fine-tune long enough to
    # measure something (MT_MIN_STEPS); a shorter one is labelled a smoke test here
    metrics.update({"mt.finetune_steps": int(summary["steps"]), "mt.finetune_minutes": float(summary["minutes"]),
                    "mt.items": int(sum(r[-1] for r in rows))})
    smoke = summary["steps"] < MT_MIN_STEPS
    rs = {k: rnn_summary.get(k, float("nan")) for k in ("steps", "params", "loss", "valid_loss")}
    rnn_text = (f"RNN baseline (bidirectional GRU encoder + attention decoder; same tokenizer, pairs, beam search and "
                f"{summary['minutes']:.2f} wall-clock minutes): {rs['steps']:,} steps, {rs['params'] / 1e6:.1f}M "
                f"parameters, train loss {rs['loss']:.2f}, valid loss {rs['valid_loss'] or float('nan'):.2f}."
                if cfg.rnn_baseline else "RNN baseline off (translate.rnn_baseline=false).")
    text = (f"The pretrained model fine-tuned as `<src> source </s> <tgt> target </s>` (loss on the target only) "
            f"on train verse pairs of {', '.join(dirs)}: {summary['steps']:,} steps in {summary['minutes']:.2f} min, "
            f"{summary['examples']:,} pairs, loss {summary['loss_first']:.2f} -> {summary['loss_last']:.2f}. "
            f"Decoded with beam search (beam {cfg.num_beams}, length penalty {cfg.length_penalty}) on "
            f"{rows[0][-1]:,} test pairs per direction spread over the held-out test chapters"
            f"{f' ({n_cut} long sources lost their beginning to fit the context)' if n_cut else ''}. {rnn_text} "
            f"{ctx.provenance('test')}.")
    title = "Machine translation"
    if smoke:
        title += f" — smoke test ({summary['minutes'] * 60:.0f} s fine-tune): not a quality measurement"
        text = (f"Smoke test: {summary['steps']:,} fine-tune steps (fewer than {MT_MIN_STEPS:,}) show that the recipe "
                f"runs end to end, not how well either system translates; the headline leaves these numbers out. "
                f"`xling translate-train --run {ctx.run_dir} translate.max_minutes=10` (or configs/translation.toml) "
                f"measures quality. " + text)
    return {"metrics": metrics, "signatures": sigs, "sections": [{"title": title, "blocks": [
        {"kind": "text", "text": text},
        {"kind": "table", "header": ["direction", "BLEU", "chrF", "RNN BLEU", "RNN chrF", "sentences"], "rows": rows},
        {"kind": "text", "text": f"sacrebleu signatures: BLEU {sigs['bleu']}; chrF {sigs['chrf']}."},
        {"kind": "table", "header": ["direction", "source", "reference", "Transformer", "RNN"], "rows": examples},
    ]}]}


# this package's evaluations, as xling.registry lists them
EVALUATIONS = (eval_translation,)
