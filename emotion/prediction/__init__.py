"""predict.py: A/V/D of new recordings with trained or exported models, written to a CSV.

    python predict.py ckpt=<checkpoint | job folder | folder of jobs | export folder> \
        input=<audio file | folder | CSV> output=<csv>

Beside the output (`preds.csv`): `preds.json` (the models, their scale and the settings, named once),
`preds.skipped.csv` (files that could not be predicted, and why), `preds.segments.csv` (with
predict.segment=vad), `preds.windows.csv` (with predict.window_seconds), `preds.embeddings.npy` (with
predict.embeddings) and `preds.plots/` (with predict.plot). Several models give their mean and, in
`<dimension>_std` columns, their spread. Every file is written whole or not at all. Work in progress is kept
in `preds.partial/`, in blocks, so that predict.resume=true continues an interrupted run; it is removed once
the outputs are written.

- inputs: which recordings the input names, and which of them can be read;
- run: the models' passes over them (whole files, windows, speech segments);
- store: the blocks of an unfinished run;
- outputs: the tables, the run's description, the pictures.
"""

from emotion.prediction.inputs import InputError, read_inputs
from emotion.prediction.outputs import OutputFiles
from emotion.prediction.run import run_predict

__all__ = ["InputError", "OutputFiles", "read_inputs", "run_predict"]
