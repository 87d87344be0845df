"""Predict arousal, valence and dominance of recordings with a trained model. See README.md and conf/predict.yaml."""

import hydra
from omegaconf import DictConfig

from emotion.cli import quote_paths


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    # Imported here so that --help and --cfg answer without loading torch.
    from emotion.entry import predict_command

    predict_command(cfg)


if __name__ == "__main__":
    quote_paths()
    main()
