"""Score a trained model on any corpus and split, without training. See README.md and conf/evaluate.yaml."""

import hydra
from omegaconf import DictConfig

from emotion.cli import quote_paths
from emotion.sweeps.folders import register_resolver

register_resolver()


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    # Imported here so that --help and --cfg answer without loading torch.
    from emotion.entry import evaluate_command

    evaluate_command(cfg)


if __name__ == "__main__":
    quote_paths()
    main()
