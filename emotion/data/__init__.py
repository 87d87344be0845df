"""Corpora and their items, audio decoding, folds and splits, and the order batches are drawn in."""
