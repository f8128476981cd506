"""Train (and test) one LRA run: ``python train.py attention=favor_sharp task=lra_text``.

Thin Hydra entry point: composes ``conf/train.yaml`` and calls :func:`spectra.training.train`.
Returns the objective (best validation accuracy) so Hydra sweepers (e.g. Optuna) can use it.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from spectra.training import train

    return float(train(cfg)["objective"])


if __name__ == "__main__":
    from spectra.training.config_store import register_configs

    register_configs()  # every registered component (plugins included) gets its config node
    main()
