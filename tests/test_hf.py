"""Tests of xling.hf: export to and import from Hugging Face transformers, and the HF encoder wrapper.

References: transformers itself (AutoModelForCausalLM / AutoTokenizer / pipeline on the exported folder,
BertModel / XLMRobertaModel on their own folders), xling's own forward, `generate` and tokenizer. Nothing
touches the hub: every model and tokenizer is built here, in temporary folders.
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

from tests.conftest import TINY, tiny_segments
from xling.checkpoint import load_run, save_checkpoint
from xling.errors import XlingError
from xling.generate import GenerateConfig, encode_prompts, generate, generate_ids
from xling.model import FAMILIES, ModelConfig, Transformer
from xling.tokenizer import EOS_ID, TokenizerConfig, build_tokenizer, tokenizer_hash

pytest.importorskip("transformers")

LANGS = list(TINY)  # en, fr, ru (Cyrillic): tags <en>=5, <fr>=6, <ru>=7
GREEDY = GenerateConfig(max_new_tokens=30, temperature=0.0, precision="fp32")
PROMPTS = {"en": "In the beginning", "fr": "La lumière", "ru": "В начале"}


pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)


@pytest.fixture(autouse=True, scope="module")
def quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()


@pytest.fixture(scope="module")
def tok():
    texts = [t for verses in TINY.values() for t in verses] * 3
    return build_tokenizer(texts, TokenizerConfig(kind="bpe", vocab_size=300), LANGS)


def train_tiny(tok, family: str, n_langs: int = 0, steps: int = 150, tie: bool = True) -> Transformer:
    """A tiny model trained briefly on `<lang> verse </s>` (so greedy output is real words, not noise)."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=tok.get_vocab_size(), n_langs=n_langs,
                                           tie_embeddings=tie, **FAMILIES[family]))
    seqs = [[5 + i] + tok.encode(t).ids + [EOS_ID] for i, lg in enumerate(LANGS) for t in TINY[lg]]
    T = max(map(len, seqs))
    idx = torch.tensor([s + [0] * (T - len(s)) for s in seqs])  # (18, T) right-padded
    lang = torch.tensor([s[0] - 5 for s in seqs])[:, None].expand_as(idx)
    real = idx != 0
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        logits = model.lm_head(model(idx[:, :-1], lang_ids=lang[:, :-1], pad_mask=real[:, :-1]))
        target = idx[:, 1:].masked_fill(~real[:, 1:], -100)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if n_langs:  # make the language vectors matter, so a wrong fold would show
        with torch.no_grad():
            model.lang_emb.weight.normal_(0.0, 0.5)
    return model.eval()


def write_run(root, model: Transformer, tok, step: int = 60):
    """A run directory as the pipeline leaves it: tokenizer/, checkpoints/, a training log and metrics."""
    (root / "tokenizer").mkdir(parents=True)
    tok.save(str(root / "tokenizer" / "tokenizer.json"))
    run_cfg = {"corpus": {"source": "bible"}, "train": {"objectives": {"clm": 1.0}},
               "generate": {"temperature": 0.0, "max_new_tokens": 30}}
    save_checkpoint(root / "checkpoints", step, model_state=model.state_dict(),
                    config={"model": dataclasses.asdict(model.cfg), "run": run_cfg},
                    tokenizer_sha256=tokenizer_hash(root / "tokenizer"))
    (root / "train").mkdir()
    (root / "train" / "metrics.jsonl").write_text(json.dumps({"step": step, "tokens": 12345, "elapsed_s": 1.0}))
    (root / "report").mkdir()
    (root / "report" / "metrics.json").write_text(json.dumps({"bpc.en": 3.25, "languages": LANGS}))
    return root


@pytest.fixture(scope="module")
def exported(tok, tmp_path_factory):
    """Per family: (our trained model, its run dir, the exported HF folder)."""
    from xling.hf import export_hf

    out = {}
    for family in FAMILIES:
        model = train_tiny(tok, family)
        base = tmp_path_factory.mktemp(family)
        run = write_run(base / "run", model, tok)
        out[family] = (model, run, export_hf(run, base / "hf"))
    return out


def batch(tok):
    """Mixed-language inputs `<lang> text`, right-padded: (ids (3, T), real (3, T) bool)."""
    seqs = [[5 + i] + tok.encode(PROMPTS[lg] + " " + TINY[lg][1]).ids for i, lg in enumerate(LANGS)]
    T = max(map(len, seqs))
    idx = torch.tensor([s + [0] * (T - len(s)) for s in seqs])
    return idx, idx != 0


# ---------------------------------------------------------------------------- export parity

@pytest.mark.parametrize("family", FAMILIES)
def test_exported_model_gives_our_logits(exported, tok, family):
    from transformers import AutoModelForCausalLM

    from xling.hf import to_hf

    model, _, folder = exported[family]
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "README.md"} <= names and not any(n.endswith(".bin") for n in names)
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert type(hf).__name__ == {"llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel"}[family]
    assert hf.lm_head.weight.data_ptr() == hf.get_input_embeddings().weight.data_ptr()  # tied, as ours
    idx, real = batch(tok)
    with torch.no_grad():
        theirs = hf(input_ids=idx, attention_mask=real.long()).logits  # (3, T, V)
        ours = model.lm_head(model(idx, pad_mask=real))
    assert (theirs[real] - ours[real]).abs().max() < 1e-4
    with torch.no_grad():  # the in-memory conversion (for benches) is the same model
        assert (to_hf(model)(input_ids=idx, attention_mask=real.long()).logits - theirs)[real].abs().max() < 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generation_and_pipeline_equal_ours(exported, tok, family):
    from transformers import AutoModelForCausalLM, pipeline

    model, _, folder = exported[family]
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert hf.generation_config.do_sample is False  # the run's [generate] temperature = 0
    assert hf.generation_config.eos_token_id == EOS_ID and hf.generation_config.pad_token_id == 0
    gen = pipeline("text-generation", model=str(folder))
    ended = 0
    for lg in LANGS:
        ids, _ = encode_prompts(tok, [PROMPTS[lg]], lg)
        ours = generate_ids(model, ids, GREEDY, stop_ids=[EOS_ID])[0]
        with torch.no_grad():
            theirs = hf.generate(torch.tensor(ids), max_new_tokens=30, do_sample=False)[0, len(ids[0]):].tolist()
        ended += theirs[-1:] == [EOS_ID]
        assert theirs[:len(ours) + 1] in (ours, ours + [EOS_ID]) and len(theirs) <= len(ours) + 1
        # the pipeline, as a user calls it: the tag in the prompt text, the generation config's greedy
        # (transformers 5 returns the prompt + the decoded new tokens, as xling.generate returns them)
        text = gen(f"<{lg}>{PROMPTS[lg]}", max_new_tokens=30)[0]["generated_text"]
        ours_text = generate(model, tok, [PROMPTS[lg]], lg, GREEDY)[0]
        assert text == f"<{lg}>{PROMPTS[lg]}" + ours_text and ours_text.strip()
    assert ended == len(LANGS)  # every continuation ended with </s> on both sides (the model was trained)


def test_exported_tokenizer_encodes_as_xling(exported, tok):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(exported["llama"][2])
    assert (hf.pad_token_id, hf.bos_token_id, hf.eos_token_id, hf.unk_token_id, hf.mask_token_id) == (0, 1, 2, 3, 4)
    texts = [t for verses in TINY.values() for t in verses] + ["Ωμέγα 123 !?", "  two  spaces", "x\ty"]
    for text in texts:
        assert hf(text)["input_ids"] == tok.encode(text).ids  # no BOS/EOS added, like ours
        # the exported decoder keeps the leading "▁" as a space (so the pipeline's new text keeps it)
        assert hf.decode(tok.encode(text).ids) == " " + tok.decode(tok.encode(text).ids)
    for i, lg in enumerate(LANGS):  # a tag in text is one special token, skipped when decoding
        ids = hf(f"<{lg}>{PROMPTS[lg]}")["input_ids"]
        assert ids == [5 + i] + tok.encode(PROMPTS[lg]).ids
        assert hf.decode(ids, skip_special_tokens=True) == " " + PROMPTS[lg]
    ours, theirs = json.loads(tok.to_str()), json.loads((exported["llama"][2] / "tokenizer.json").read_text("utf-8"))
    assert [d["type"] for d in ours["decoder"]["decoders"]] == [d["type"] for d in theirs["decoder"]["decoders"]] + [
        "Strip"]
    assert {k: v for k, v in ours.items() if k != "decoder"} == {k: v for k, v in theirs.items() if k != "decoder"}


def test_model_card_and_provenance(exported):
    _, run, folder = exported["llama"]
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "language: [en, fr, ru]" in card and "LlamaForCausalLM" in card
    assert "| training tokens | 12,345 |" in card and "| bpc.en | 3.25 |" in card and "clm (1.0)" in card
    info = json.loads((folder / "xling.json").read_text(encoding="utf-8"))
    assert info["step"] == 60 and info["langs"] == LANGS and info["folded_lang"] is None


def test_model_card_metrics_from_eval_results_before_a_report(tmp_path):
    from xling.hf.export import _run_metrics

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "bpc.json").write_text(json.dumps({"order": 30, "metrics": {"bpc.en": 3.0}}))
    (tmp_path / "eval" / "tokenizer.json").write_text(json.dumps({"order": 10, "metrics": {"tokenizer.x": 1}}))
    assert _run_metrics(tmp_path) == {"tokenizer.x": 1, "bpc.en": 3.0}
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "metrics.json").write_text(json.dumps({"bpc.en": 2.5}))
    assert _run_metrics(tmp_path) == {"bpc.en": 2.5}  # the rendered report wins


# ---------------------------------------------------------------------------- language embeddings

@pytest.mark.parametrize("family", FAMILIES)
def test_language_embeddings_fold_into_a_one_language_export(tok, tmp_path, family):
    from transformers import AutoModelForCausalLM

    from xling.hf import export_hf

    model = train_tiny(tok, family, n_langs=3, steps=10)
    run = write_run(tmp_path / "run", model, tok)
    with pytest.raises(XlingError, match="language embeddings.*--lang"):
        export_hf(run, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    folder = export_hf(run, tmp_path / "hf", lang="fr")
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    idx, real = batch(tok)
    idx[:, 0] = 6  # every row a French sequence `<fr> ...`
    with torch.no_grad():
        theirs = hf(input_ids=idx, attention_mask=real.long()).logits
        ours = model.lm_head(model(idx, pad_mask=real, lang_ids=torch.ones_like(idx)))
        unfolded = model.lm_head(model(idx, pad_mask=real))
    logp = (theirs.log_softmax(-1) - ours.log_softmax(-1))[real].abs().max()
    assert logp < 1e-4 and (unfolded - ours)[real].abs().max() > 1e-2  # the fold is exact and matters
    if family == "gpt2":  # folded into the position table: even the raw logits are unchanged
        assert (theirs - ours)[real].abs().max() < 1e-4
    ids, index = encode_prompts(tok, [PROMPTS["fr"]], "fr")
    ours_ids = generate_ids(model, ids, GREEDY, lang_index=index)
    with torch.no_grad():
        theirs_ids = hf.generate(torch.tensor(ids), max_new_tokens=30, do_sample=False, eos_token_id=None)
    assert theirs_ids[0, len(ids[0]):].tolist() == ours_ids[0]
    assert "serves that language only" in (folder / "README.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------- import

@pytest.mark.parametrize("family", FAMILIES)
def test_export_then_import_gives_identical_weights(exported, tok, family):
    from xling.hf import import_hf

    model, _, folder = exported[family]
    back, tok2 = import_hf(folder)
    assert back.cfg == model.cfg
    want = model.state_dict()
    assert set(back.state_dict()) == set(want)
    assert all(torch.equal(v, want[k]) for k, v in back.state_dict().items())
    assert tok2.to_str() == tok.to_str()  # xling's decoder back (the export drops its leading-space strip)


def test_import_of_a_model_made_by_transformers(tmp_path, tok):
    """A GPT-2 built and saved by transformers itself (not by us): same logits after import."""
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from xling.hf import import_hf

    torch.manual_seed(3)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=96, n_embd=32, n_layer=2,
                                    n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).eval()
    with torch.no_grad():  # non-trivial biases and norms
        for p in hf.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path)
    PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(tmp_path)
    model, _ = import_hf(tmp_path)
    assert model.cfg.block_size == 96 and model.cfg.d_ff == 0 and model.cfg.pos == "learned"
    idx, real = batch(tok)
    with torch.no_grad():
        assert (hf(input_ids=idx).logits - model.lm_head(model(idx))).abs().max() < 1e-4


def test_import_run_then_generate_and_evaluate(exported, tok, tmp_path, fake_source, capsys):
    from xling.cli import main
    from xling.corpus import CorpusConfig, build_corpus
    from xling.stages import run_evaluate

    model, _, folder = exported["llama"]
    fake_source(tiny_segments(20))
    build_corpus(CorpusConfig(source="text", langs=LANGS, valid_fraction=0.1, test_fraction=0.1), tmp_path / "c")
    run = tmp_path / "imported"
    assert main(["import", str(folder), "--run", str(run), "--corpus", str(tmp_path / "c")]) == 0
    assert {"checkpoints", "tokenizer", "corpus", "shards", "manifest.json"} <= {p.name for p in run.iterdir()}
    m, t = load_run(run)
    want = generate(model, tok, [PROMPTS["ru"]], "ru", GREEDY)
    assert generate(m, t, [PROMPTS["ru"]], "ru", GREEDY) == want
    capsys.readouterr()
    assert main(["generate", "--lang", "ru", "--run", str(run), PROMPTS["ru"], "generate.temperature=0",
                 "generate.max_new_tokens=30", "generate.precision=fp32"]) == 0
    assert want[0] in capsys.readouterr().out
    metrics = run_evaluate(run, only=["tokenizer", "bpc"])
    assert set(LANGS) <= {k.split(".")[-1] for k in metrics if k.startswith("bpc.")}
    assert all(0 < metrics[f"bpc.{lg}"] < 20 for lg in LANGS)
    # the run is refused as a target again unless --overwrite
    assert main(["import", str(folder), "--run", str(run)]) == 2
    assert "already exists" in capsys.readouterr().err
    # --overwrite replaces the whole run (no stale shards of another tokenizer are left behind)
    assert main(["import", str(folder), "--run", str(run), "--overwrite"]) == 0
    assert {p.name for p in run.iterdir()} == {"checkpoints", "tokenizer", "manifest.json"}
    # issue 21: a directory of someone's files is no run: --overwrite does not delete it
    other = tmp_path / "papers"
    other.mkdir()
    (other / "thesis.tex").write_text("my work", encoding="utf-8")
    capsys.readouterr()
    assert main(["import", str(folder), "--run", str(other), "--overwrite"]) == 2
    assert "holds no xling run" in capsys.readouterr().err
    assert (other / "thesis.tex").read_text(encoding="utf-8") == "my work"


def test_cli_export_writes_a_loadable_folder(exported, tmp_path, capsys):
    from xling.cli import main
    from xling.hf import import_hf

    model, run, _ = exported["gpt2"]
    out = tmp_path / "exp"
    assert main(["export", "--run", str(run), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert torch.equal(import_hf(out)[0].wte.weight, model.wte.weight)
    assert main(["export", "--run", str(run), "--out", str(out)]) == 2  # exists: refused
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert main(["export", "--run", str(run), "--out", str(out), "--overwrite"]) == 0


# ---------------------------------------------------------------------------- bad input

def _cli_error(capsys, argv) -> str:
    from xling.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_bad_import_folders_get_one_line(exported, tmp_path, capsys):
    import shutil

    folder = exported["llama"][2]

    def copy(name):
        d = tmp_path / name
        shutil.copytree(folder, d)
        return d

    run = ["--run", str(tmp_path / "r")]
    assert "no config.json" in _cli_error(capsys, ["import", str(tmp_path), *run])
    assert "does not exist" in _cli_error(capsys, ["import", str(tmp_path / "nope"), *run])
    bert = copy("bert")
    conf = json.loads((bert / "config.json").read_text())
    (bert / "config.json").write_text(json.dumps({**conf, "architectures": ["BertForMaskedLM"],
                                                  "model_type": "bert"}))
    err = _cli_error(capsys, ["import", str(bert), *run])
    assert "BertForMaskedLM" in err and "GPT2LMHeadModel, LlamaForCausalLM" in err
    gqa = copy("gqa")
    (gqa / "config.json").write_text(json.dumps({**conf, "num_key_value_heads": 1}))
    assert "grouped-query" in _cli_error(capsys, ["import", str(gqa), *run])
    no_tok = copy("no_tok")
    (no_tok / "tokenizer.json").unlink()
    assert "no tokenizer.json" in _cli_error(capsys, ["import", str(no_tok), *run])
    foreign = copy("foreign_tok")
    (foreign / "tokenizer.json").write_text((folder / "tokenizer.json").read_text().replace('"<pad>"', '"[PAD]"'))
    assert "xling's conventions" in _cli_error(capsys, ["import", str(foreign), *run])
    corrupt = copy("corrupt")
    data = (corrupt / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert "corrupt or truncated" in _cli_error(capsys, ["import", str(corrupt), *run])
    no_w = copy("no_weights")
    (no_w / "model.safetensors").unlink()
    assert "no weights" in _cli_error(capsys, ["import", str(no_w), *run])
    small = copy("small_vocab")
    (small / "config.json").write_text(json.dumps({**conf, "vocab_size": 100}))
    assert "do not belong together" in _cli_error(capsys, ["import", str(small), *run])
    assert "not an xling corpus" in _cli_error(capsys, ["import", str(folder), *run, "--corpus", str(tmp_path)])
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_export_refuses_a_mix_no_hf_model_has(tok, tmp_path, capsys):
    torch.manual_seed(0)
    mix = Transformer(ModelConfig.preset("tiny", vocab_size=tok.get_vocab_size(), **dict(FAMILIES["gpt2"],
                                                                                             pos="rope")))
    run = write_run(tmp_path / "run", mix, tok)
    err = _cli_error(capsys, ["export", "--run", str(run), "--out", str(tmp_path / "hf")])
    assert "pos=rope" in err and "model.norm=rmsnorm" in err and not (tmp_path / "hf").exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_untied_output_layer_exports_and_imports_exactly(tok, tmp_path, family):
    """model.tie_embeddings=false: HF gets its own lm_head (tie_word_embeddings=false), logits equal ours, and
    the import gives back the same weights, the output layer included."""
    from transformers import AutoModelForCausalLM

    from xling.hf import export_hf, import_hf

    model = train_tiny(tok, family, n_langs=len(LANGS), steps=60, tie=False)
    folder = export_hf(write_run(tmp_path / "run", model, tok), tmp_path / "hf", lang="fr")
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert hf.lm_head.weight.data_ptr() != hf.get_input_embeddings().weight.data_ptr()
    assert torch.equal(hf.lm_head.weight, model.lm_out.weight)
    idx, real = batch(tok)
    fr = torch.full_like(idx, LANGS.index("fr"))
    with torch.no_grad():  # the French export: every position carries the French language vector, folded in exactly
        theirs = hf(input_ids=idx, attention_mask=real.long()).logits  # (3, T, V)
        ours = model.lm_head(model(idx, pad_mask=real, lang_ids=fr))
    assert (theirs[real] - ours[real]).abs().max() < 1e-4
    back, _ = import_hf(folder)
    assert not back.cfg.tie_embeddings and torch.equal(back.lm_out.weight, model.lm_out.weight)
    with torch.no_grad():
        again = back.lm_head(back(idx, pad_mask=real))
    assert (again[real] - theirs[real]).abs().max() < 1e-4


@pytest.mark.parametrize("target", ["../outside.safetensors", "/tmp/abs.safetensors", "sub/x.safetensors"])
def test_a_shard_index_that_points_outside_the_folder_is_refused(exported, tmp_path, target):
    """Issue 21: model.safetensors.index.json mapping a weight to ../outside.safetensors was followed."""
    import shutil

    from xling.hf import import_hf

    d = tmp_path / "sharded"
    shutil.copytree(exported["llama"][2], d)
    (d / "model.safetensors").rename(tmp_path / "outside.safetensors")  # a real, loadable file, one level up
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"lm_head.weight": target}}))
    with pytest.raises(XlingError, match="names weight files outside"):
        import_hf(d)


def test_an_lm_head_that_differs_from_tied_embeddings_is_refused(exported, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from xling.hf import import_hf

    d = tmp_path / "untied"
    shutil.copytree(exported["llama"][2], d)
    sd = load_file(str(d / "model.safetensors"))
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"] + 1
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(XlingError, match="ties them"):
        import_hf(d)


# ---------------------------------------------------------------------------- encoders for transfer

def _toy_pieces() -> tuple[list[str], list[str]]:
    """The words and characters of TINY, sorted: a fixed vocabulary for the toy encoders. (Training one with
    `tokenizers` is not reproducible: ties in its counts break in hash order, so the vocabulary changed from run
    to run, and with it what the fine-tuning test below learned.)"""
    texts = [t for v in TINY.values() for t in v]
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t)})
    return words, sorted({c for t in texts for c in t if not c.isspace()})


def _bert_folder(path):
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words, chars = _toy_pieces()
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *(c for c in chars if c not in words),
              *(f"##{c}" for c in chars)]
    wp = BertWordPieceTokenizer({p: i for i, p in enumerate(pieces)}, lowercase=False, strip_accents=False)
    tok = BertTokenizerFast(tokenizer_object=wp._tokenizer, do_lower_case=False)
    tok.save_pretrained(path)
    BertModel(BertConfig(vocab_size=len(pieces), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(path)
    return path


def _xlmr_folder(path):
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    words, chars = _toy_pieces()  # whole words score above single characters, so a known word stays whole
    sp = SentencePieceUnigramTokenizer([(p, 0.0) for p in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")]
                                       + [(f"\u2581{w}", -2.0) for w in words] + [("\u2581", -4.0)]
                                       + [(c, -6.0) for c in chars])
    tok = XLMRobertaTokenizerFast(tokenizer_object=sp._tokenizer, bos_token="<s>", eos_token="</s>",
                                  sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                  mask_token="<mask>")
    tok.save_pretrained(path)
    XLMRobertaModel(XLMRobertaConfig(vocab_size=sp.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=66,
                                     pad_token_id=1)).save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["bert", "xlm-roberta"])
def test_hf_encoder_equals_transformers(kind, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    from xling.hf import HFEncoder

    torch.manual_seed(0)
    folder = (_bert_folder if kind == "bert" else _xlmr_folder)(tmp_path)
    enc = HFEncoder(folder)
    ref_tok, ref = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    texts = [TINY["en"][0], TINY["ru"][1], TINY["fr"][2]]
    ids = enc.encode_texts(texts, "en")
    cls, sep = (2, 3) if kind == "bert" else (0, 2)  # [CLS] ... [SEP] / <s> ... </s>
    assert all(x[0] == cls and x[-1] == sep and 3 < len(x) for x in ids)
    assert ids == ref_tok(texts)["input_ids"]
    assert (enc.d_model, enc.pad_id, enc.max_length) == (32, 0 if kind == "bert" else 1, 64)
    T = max(map(len, ids))
    idx = torch.tensor([x + [enc.pad_id] * (T - len(x)) for x in ids])
    real = torch.tensor([[i < len(x) for i in range(T)] for x in ids])
    enc.eval()
    with torch.no_grad():
        h = enc(idx, real, "en")  # (3, T, 32)
        assert h.shape == (3, T, 32)
        for r, x in enumerate(ids):  # each row equals transformers' output for that text alone
            alone = ref(input_ids=torch.tensor([x])).last_hidden_state[0]
            assert (h[r, :len(x)] - alone).abs().max() < 1e-5
    # fine-tunable: gradients reach the wrapped model's weights
    enc.train()
    enc(idx, real, "en")[real].sum().backward()
    assert all(p.grad is not None for p in enc.model.embeddings.parameters() if p.requires_grad)
    with pytest.raises(XlingError, match="no config.json"):
        HFEncoder(tmp_path / "missing")


def test_hf_encoder_refuses_pickled_weights_before_loading_them(tmp_path):
    """Issue 21: a folder with only pytorch_model.bin (a pickle) is refused up front; nothing is unpickled."""
    import pickle

    from xling.hf import HFEncoder

    folder = _bert_folder(tmp_path)
    for f in folder.glob("*.safetensors"):
        f.unlink()

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(XlingError, match=r"no safetensors weights \(only pytorch_model.bin\)"):
        HFEncoder(folder)


@pytest.mark.parametrize("finetune", ["head", "full"])
def test_hf_encoder_fine_tunes_with_the_classify_recipe(finetune, tmp_path):
    import numpy as np

    from xling.hf import HFEncoder
    from xling.tasks.classify.config import ClassifyConfig
    from xling.tasks.classify.data import Examples, TaskData
    from xling.tasks.classify.transfer import run_transfer

    torch.manual_seed(0)
    enc = HFEncoder(_bert_folder(tmp_path))
    before = {k: v.clone() for k, v in enc.state_dict().items()}

    def examples(fillers):  # class = which word ("light" / "word") the text holds; each filler comes with both,
        texts = [f"the {c} {f}" for f in fillers for c in ("light", "word")]  # so only that word tells the class
        return Examples("en", texts, np.array([i % 2 for i in range(len(texts))]), [f"k{i}" for i in range(len(texts))])

    data = TaskData("toy", ["light", "word"], {  # valid and test fillers are words the training never saw
        "train": {"en": examples(["beginning", "darkness", "truth", "Grace", "testimony", "seen"])},
        "valid": {"en": examples(["came", "own", "God"])}, "test": {"en": examples(["time", "through", "shines"])}})
    cfg = ClassifyConfig(finetune=finetune, epochs=15, patience=0, batch_size=4, seeds=[0], lr=0.05, dropout=0.0,
                         encoder_lr=1e-3)
    res = run_transfer(enc, data, cfg, mode="zero-shot", sources=["en"])
    assert res["rows"][0]["accuracy"]["en"]["mean"] == 1.0
    assert all(torch.equal(v, before[k]) for k, v in enc.state_dict().items())  # the caller's encoder is back
