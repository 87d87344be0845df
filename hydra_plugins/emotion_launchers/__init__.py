"""Hydra plugins of the emotion project, its launchers and its search sweeper (Hydra finds them through
the hydra_plugins namespace)."""
