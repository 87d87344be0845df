"""The Mamba-EMA model and its parts, and the encoder's frame grid: tensors only."""
