"""What the entry points can reach, listed by import: every config section and every evaluation.

    cfg = load_config("configs/demo.toml", ["corpus.alpha=0.5"])   # every section, every key checked
    run_evaluations(ctx, EVALUATIONS)                               # xling.evaluate runs the table

The modules of the data flow know nothing of the tasks: `xling.config` checks a config against the section table
it is given, and `xling.evaluate` runs the evaluation table it is given. The tables are here, above the tasks;
`cli.py`, `stages.py` and this module are the only ones that import `xling.tasks` (tests/test_imports.py). A
new section or evaluation is one import and one entry below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xling.config import Config, RunConfig, build_config
from xling.corpus import CorpusConfig
from xling.evaluate import BUILT_IN, evaluations
from xling.generate import GenerateConfig
from xling.model import ModelConfig
from xling.shards import ShardConfig
from xling.tasks.align.config import AlignConfig
from xling.tasks.align.evaluation import EVALUATIONS as ALIGN
from xling.tasks.align.vectors import VectorsConfig
from xling.tasks.classify.config import ClassifyConfig
from xling.tasks.classify.evaluation import EVALUATIONS as CLASSIFY
from xling.tasks.retrieval.evaluation import EVALUATIONS as RETRIEVAL
from xling.tasks.translate.config import TranslateConfig
from xling.tasks.translate.evaluation import EVALUATIONS as TRANSLATE
from xling.tokenizer import TokenizerConfig
from xling.train_config import TrainConfig

# section name -> its dataclass, in the order a resolved config is written
SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "corpus": CorpusConfig,
    "tokenizer": TokenizerConfig,
    "shard": ShardConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "generate": GenerateConfig,
    "translate": TranslateConfig,
    "vectors": VectorsConfig,
    "align": AlignConfig,
    "classify": ClassifyConfig,
}

# name -> (order, fn): the pretrained model's evaluations (tokenizer 10, pretrain 20, bpc 30, retrieval 40,
# langid 50, generation 60), then each task package's (peer 42, mining 45, ood 48, translation 70,
# transfer 80, align 90)
EVALUATIONS = evaluations(*BUILT_IN, *RETRIEVAL, *TRANSLATE, *CLASSIFY, *ALIGN)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: dict[str, dict[str, Any]] | None = None) -> Config:
    """Defaults <- `base` (e.g. a run's saved config) <- TOML file <- dotted overrides, every section of SECTIONS."""
    return build_config(SECTIONS, path, overrides, base)
