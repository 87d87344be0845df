"""The training loop, its metric, optimiser, checkpoints and output files."""
