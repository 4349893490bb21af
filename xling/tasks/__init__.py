"""Downstream tasks on top of corpora and trained models (alignment, translation, classification, ...)."""
