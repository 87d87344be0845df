"""A Hydra callback for tests: what each job returned to Hydra, written beside its outputs."""

from __future__ import annotations

import json
from pathlib import Path

from hydra.experimental.callback import Callback


class RecordReturn(Callback):
    def on_job_end(self, config, job_return, **kwargs) -> None:
        folder = Path(config.hydra.runtime.output_dir)
        (folder / "returned.json").write_text(json.dumps(job_return.return_value))
