"""The `search` sweeper: an Optuna search whose trial is a configuration over several folds.

    python train.py -m sweep=search                     # conf/sweep/search.yaml picks this sweeper
    python train.py -m hydra/sweeper=search search.n_trials=50 ...

The search itself is emotion.sweeps.search; this plugin gives it the sweep's launcher, what a job's config
is, and how many jobs the launcher runs at once.
"""
# No `from __future__ import annotations`: Hydra executes plugin modules before registering them.

import logging
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from emotion.signals import STOP

log = logging.getLogger(__name__)


@dataclass
class SearchSweeperConf:
    _target_: str = "hydra_plugins.emotion_launchers.search_sweeper.SearchSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="search", node=SearchSweeperConf, provider="emotion")

# Jobs at once on SLURM when hydra.launcher.array_parallelism is not set lower: enough to keep a share of a
# cluster busy, few enough that the sampler learns between trials. search.parallel sets it.
SLURM_PARALLEL = 8


class SearchSweeper(Sweeper):
    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        from emotion.sweeps.search import run_search
        from emotion.sweeps.studies import SearchError

        if OmegaConf.select(self.config, "search") is None:
            raise SearchError("hydra/sweeper=search needs a search: section; start from sweep=search")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # as Hydra's own sweeper: the report reads it
        capacity, suggested = self._capacity()
        run_search(
            self.config,
            arguments,
            launch=self._launch,
            capacity=capacity,
            suggested=suggested,
            compose=self._compose,
            stop=STOP.install(),
            on_stop=getattr(self.launcher, "cancel_jobs", None),  # SLURM: its jobs take no signal from here
        )

    def _launch(self, overrides: list[str], index: int):
        return self.launcher.launch([overrides], initial_job_idx=index)[0]

    def _compose(self, overrides: list[str]) -> DictConfig:
        return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))

    def _capacity(self) -> tuple[int, int]:
        """How many jobs the launcher can run at once, and how many a search runs with search.parallel=auto:
        one per GPU of the pool; one for Hydra's basic launcher, which runs them in this process; on SLURM,
        hydra.launcher.array_parallelism, by default at most SLURM_PARALLEL."""
        if hasattr(self.launcher, "slots"):
            return len(self.launcher.slots()), len(self.launcher.slots())
        params = getattr(self.launcher, "params", None)
        if isinstance(params, dict) and "array_parallelism" in params:
            return int(params["array_parallelism"]), min(int(params["array_parallelism"]), SLURM_PARALLEL)
        return 1, 1
