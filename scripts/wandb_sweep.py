"""Write a W&B sweep spec that runs ``train.py`` with Hydra overrides.

    # the Spectraformer grid (every registered sampler × component function) + baselines
    python scripts/wandb_sweep.py grid --task lra_listops --seeds 0,1 --out sweeps/listops.yaml \
        -- trainer=gpu experiment=lra_paper
    wandb sweep sweeps/listops.yaml && wandb agent <entity/project/sweep id>
    wandb sweep sweeps/listops-baselines.yaml && wandb agent …   # softmax, Skyformer, …

    # the Optuna search space of hydra/sweeper=spectra_optuna as a W&B Bayesian search
    python scripts/wandb_sweep.py optuna --out sweeps/search.yaml -- experiment=quickstart

Everything after ``--`` is passed to every run as fixed Hydra overrides. W&B's grid method is a
Cartesian product, so the baselines (no sampler) get their own spec ``<out>-baselines.yaml``.
Defaults (the baselines, the search space) come from the composed sweeper config
(``hydra/sweeper=spectra_grid`` or ``spectra_optuna``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spectra.analysis.config import compose_train


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _sweeper_config(sweeper: str, overrides: list[str]) -> dict:
    """The composed ``hydra.sweeper`` config (``params`` as strings)."""
    from omegaconf import OmegaConf

    cfg = compose_train([f"hydra/sweeper={sweeper}", *overrides], hydra_config=True)
    out = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    out["params"] = {str(k): str(v) for k, v in (out.get("params") or {}).items()}
    direction = out.get("direction", "maximize")
    out["direction"] = str(getattr(direction, "name", direction)).lower()
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, overrides = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="kind", required=True)
    grid = sub.add_parser("grid", help="the Spectraformer grid (+ a baselines spec)")
    grid.add_argument("--samplers", help="comma-separated (default: every registered sampler)")
    grid.add_argument("--feature-maps", help="comma-separated (default: every registered map)")
    grid.add_argument("--baselines", default=None,
                      help="attention presets run beside the grid ('' for none; default: "
                      "hydra.sweeper.baselines of hydra/sweeper=spectra_grid)")
    grid.add_argument("--seeds", default="0", help="comma-separated seeds")
    grid.add_argument("--task", default="lra_listops", help="comma-separated task(s)")
    search = sub.add_parser("optuna", help="the search space of an Optuna sweeper config")
    search.add_argument("--sweeper", default="spectra_optuna", help="hydra/sweeper config")
    search.add_argument("--method", default="bayes", choices=("bayes", "random", "grid"))
    search.add_argument("--run-cap", type=int, default=None,
                        help="maximum runs (default: the sweeper's n_trials)")
    for p in (grid, search):
        p.add_argument("--out", type=Path, required=True, help="spec file to write (.yaml)")
        p.add_argument("--project", default=None)
        p.add_argument("--entity", default=None)
        p.add_argument("--name", default=None, help="sweep name shown by W&B")
    args = parser.parse_args(argv)

    import yaml

    from spectra.sweeps.wandb_spec import grid_specs, optuna_spec

    try:
        if args.kind == "grid":
            sweeper = _sweeper_config("spectra_grid", overrides)
            specs = grid_specs(
                samplers=_names(args.samplers), feature_maps=_names(args.feature_maps),
                baselines=(sweeper["baselines"] if args.baselines is None
                           else _names(args.baselines) or []),
                seeds=[int(s) for s in _names(args.seeds) or []],
                tasks=_names(args.task) or [], overrides=overrides,
                random_features=sweeper["params"]["attention"], project=args.project,
                entity=args.entity, name=args.name)
        else:
            sweeper = _sweeper_config(args.sweeper, overrides)
            specs = {"grid": optuna_spec(
                sweeper["params"], direction=sweeper["direction"], method=args.method,
                overrides=overrides, run_cap=args.run_cap or sweeper.get("n_trials") or None,
                project=args.project, entity=args.entity, name=args.name)}
    except ValueError as exc:
        print(f"wandb_sweep.py: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for kind, spec in specs.items():
        path = args.out if kind == "grid" else args.out.with_name(
            f"{args.out.stem}-{kind}{args.out.suffix or '.yaml'}")
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        runs = 1
        for param in spec["parameters"].values():
            runs *= len(param.get("values", [None]))
        size = f"{runs} runs" if spec["method"] == "grid" else f"run_cap {spec.get('run_cap')}"
        print(f"{path} ({spec['method']}, {size}):  wandb sweep {path}  then  wandb agent <id>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
