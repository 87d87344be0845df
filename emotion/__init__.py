"""Dimensional speech emotion recognition: corpora, the Mamba-EMA model, the trainer, Hydra jobs."""
