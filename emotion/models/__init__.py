"""The Mamba-EMA model and its parts."""
