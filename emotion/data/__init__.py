"""Corpora, audio decoding, prosody contours and batches."""
