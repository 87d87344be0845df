"""Corpora and their items, audio decoding, and batches."""
