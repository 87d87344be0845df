"""Export trained models to ONNX, in the layout audonnx.load reads. See README.md and conf/export.yaml."""

import hydra
from omegaconf import DictConfig

from emotion.cli import quote_paths


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    # Imported here so that --help and --cfg answer without loading torch.
    from emotion.entry import export_command

    export_command(cfg)


if __name__ == "__main__":
    quote_paths()
    main()
