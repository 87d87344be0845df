"""One training job: the loop, its metrics, optimiser, checkpoints and their recipe, inference, output files,
and the eGeMAPS baseline."""
