"""Sweeps: the Hydra callback that keeps a sweep's comparison table current, and the GPU pool launcher."""
