"""Evaluate a checkpoint: ``python eval.py ckpt_path=outputs/…/checkpoints/last.ckpt [split=val]``.

The model, attention and task come from the config stored in the checkpoint; ``task.data_dir=…``
and other non-null ``task.*`` values override the stored task config. Metrics are printed and
written to ``<run dir>/metrics.json``. (Equivalently: ``python train.py train=false test=true
ckpt_path=…`` with the run's own config.)
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    from spectra.training import evaluate

    metrics = evaluate(cfg)
    return float(metrics.get(f"{cfg.split}/acc", float("nan")))


if __name__ == "__main__":
    from spectra.training.config_store import register_configs

    register_configs()  # every registered component (plugins included) gets its config node
    main()
