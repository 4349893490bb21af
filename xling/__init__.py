"""xling: cross-lingual generative pretrained Transformers, end to end.

Stages (each usable from Python and from the `xling` command):
corpus -> tokenizer -> shards -> pretraining -> tasks and evaluation -> report.
"""

__version__ = "0.1.0"
