"""Sweeps and reports: the Spectraformer grid (every registered sampler × every registered
component function, arXiv 2405.15310) as Hydra's own multirun plus baselines
(:mod:`~spectra.sweeps.sweeper`), a Hydra callback that checks names and records run statuses
(:mod:`~spectra.sweeps.callbacks`), W&B sweep specs (:mod:`~spectra.sweeps.wandb_spec`), and the
report: runs into one pandas DataFrame (:mod:`~spectra.sweeps.results`), the paper's table
(:mod:`~spectra.sweeps.summary`), figures, dashboard (:mod:`~spectra.sweeps.report`).

Importing this package is cheap: the submodules import Hydra, pandas, matplotlib or W&B
themselves.
"""
