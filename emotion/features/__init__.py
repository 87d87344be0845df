"""Between files and tensors: the encoder's frame grid, acoustic features on it, and the caches that keep
what is computed once per file (acoustic features, a frozen encoder's states)."""
