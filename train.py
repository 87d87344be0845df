"""Train one job, or a sweep with -m. See README.md and conf/train.yaml."""

import hydra
from omegaconf import DictConfig

from emotion.cli import quote_paths
from emotion.sweeps.folders import register_resolver

register_resolver()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    # Imported here so that --help, --cfg and tab completion answer without loading torch.
    from emotion.job import run_job

    return run_job(cfg)


if __name__ == "__main__":
    quote_paths()
    main()
