"""Sweeps: job folders read back into configurations, their statistics and nested choices, searches and
their pruning."""
