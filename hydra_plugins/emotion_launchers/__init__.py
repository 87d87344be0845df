"""Hydra launchers of the emotion project (found by Hydra through the hydra_plugins namespace)."""
