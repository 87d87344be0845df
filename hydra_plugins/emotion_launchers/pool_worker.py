"""Runs one job of the GPU pool launcher in its own process: `python -m ... <job.pkl> <result.pkl>`."""

from __future__ import annotations

import sys
from pathlib import Path

import cloudpickle
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobStatus, run_job


def main(job_file: str, result_file: str) -> None:
    hydra_context, task_function, sweep_config = cloudpickle.loads(Path(job_file).read_bytes())
    HydraConfig.instance().set_config(sweep_config)
    ret = run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    try:
        payload = cloudpickle.dumps(ret)
    except Exception:  # an exception that will not pickle: keep its text
        ret.return_value = RuntimeError(repr(ret.return_value))
        payload = cloudpickle.dumps(ret)
    tmp = Path(f"{result_file}.tmp")
    tmp.write_bytes(payload)
    tmp.replace(result_file)
    sys.exit(0 if ret.status == JobStatus.COMPLETED else 1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
