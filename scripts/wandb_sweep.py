"""Write a W&B sweep spec that runs ``train.py`` with Hydra overrides.

    # the Spectraformer grid (every registered sampler × component function) + baselines
    python scripts/wandb_sweep.py grid --task lra_listops --seeds 0,1 --out sweeps/listops.yaml \
        -- trainer=gpu experiment=lra_paper
    wandb sweep sweeps/listops.yaml && wandb agent <entity/project/sweep id>
    wandb sweep sweeps/listops-baselines.yaml && wandb agent …   # softmax, Skyformer

    # the Optuna search space of hydra/sweeper=spectra_optuna as a W&B Bayesian search
    python scripts/wandb_sweep.py optuna --out sweeps/search.yaml -- experiment=quickstart

Everything after ``--`` is passed to every run as fixed Hydra overrides. W&B's grid method is a
Cartesian product, so the baselines (no sampler) get their own spec ``<out>-baselines.yaml``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _optuna_params(sweeper: str, overrides: list[str]) -> tuple[dict[str, str], str, int]:
    """``hydra.sweeper.params``, direction and n_trials of the composed sweeper config."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/sweeper={sweeper}", *overrides],
                      return_hydra_config=True)
    sweeper_cfg = cfg.hydra.sweeper
    params = OmegaConf.to_container(sweeper_cfg.get("params") or {}, resolve=True)
    direction = sweeper_cfg.get("direction", "maximize")
    if not isinstance(direction, str):
        direction = str(getattr(direction, "name", direction))
    return {str(k): str(v) for k, v in params.items()}, direction, int(
        sweeper_cfg.get("n_trials") or 0)


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
    grid.add_argument("--baselines", default="softmax,skyformer",
                      help="attention presets run beside the grid ('' for none)")
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
            specs = grid_specs(
                samplers=_names(args.samplers), feature_maps=_names(args.feature_maps),
                baselines=_names(args.baselines) or [],
                seeds=[int(s) for s in _names(args.seeds) or []],
                tasks=_names(args.task) or [], overrides=overrides, project=args.project,
                entity=args.entity, name=args.name)
        else:
            params, direction, n_trials = _optuna_params(args.sweeper, overrides)
            specs = {"grid": optuna_spec(params, direction=direction, method=args.method,
                                         overrides=overrides, run_cap=args.run_cap or n_trials
                                         or None, project=args.project, entity=args.entity,
                                         name=args.name)}
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
