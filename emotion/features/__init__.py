"""Between files and tensors: acoustic features on the encoder's frame grid, the caches that keep what is
computed once per file (acoustic features, a frozen encoder's states), normalisation, and the datasets that
turn items into batches."""
