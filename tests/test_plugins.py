"""Plugins: entry-point discovery, errors, listing, Hydra configs, the example plugin end to end.

Discovery and the bad-input cases use throw-away plugin *distributions* written into a temporary
directory (a ``*.dist-info`` with ``entry_points.txt`` next to the plugin module), read through
``importlib.metadata`` exactly as installed packages are, in isolation from what is installed.
The example package ``plugins/spectra_halton`` is tested as installed (CI runs
``pip install -e plugins/spectra_halton``); those tests skip with the install command when it is
not installed, and fail instead when ``CI`` is set.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from tiny import TINY_MODEL

import spectra.plugins as plugins
from spectra.__main__ import format_listing, main
from spectra.registry import (
    ATTENTIONS,
    FEATURE_MAPS,
    SAMPLERS,
    DuplicateComponentError,
    UnknownComponentError,
)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
EXAMPLE = ROOT / "plugins" / "spectra_halton"
REGISTRIES = (SAMPLERS, FEATURE_MAPS, ATTENTIONS)
PREFIX = "fakeplug_"  # module names of the throw-away plugins

SAMPLER_PLUGIN = '''
"""A throw-away plugin."""
import torch
from spectra.features import Sampler
from spectra.registry import SAMPLERS


@SAMPLERS.register("{name}")
class PluginSampler(Sampler):
    """Plugin sampler {name}: iid N(0, 1) rows."""

    def _sample(self, generator, device, dtype):
        dev = generator.device if generator is not None else device
        return torch.randn(self.num_features, self.dim, generator=generator, device=dev,
                           dtype=torch.float64)
'''


# -- fixtures -------------------------------------------------------------------------------------
Install = Callable[..., None]


@pytest.fixture
def fake_plugins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Install]:
    """``install(module, code, *, dist=…, value=…)`` writes a plugin module and a distribution
    declaring it as a ``spectra.plugins`` entry point. Plugin state is reset (so the next registry
    read loads them) and registries and ``sys.modules`` are restored afterwards."""
    SAMPLERS.names()  # built-ins and installed plugins first: the snapshot includes them
    saved = [dict(reg._entries) for reg in REGISTRIES]
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def entry_points(*, group: str) -> list[importlib.metadata.EntryPoint]:
        dists = importlib.metadata.distributions(path=[str(site)])
        return [ep for dist in dists for ep in dist.entry_points if ep.group == group]

    monkeypatch.setattr(plugins, "entry_points", entry_points)
    monkeypatch.setattr(plugins, "_LOADED", {})
    monkeypatch.setattr(plugins, "_BROKEN", {})
    monkeypatch.setattr(plugins, "_DONE", False)
    monkeypatch.delenv(plugins.SKIP_ENV, raising=False)

    def install(module: str, code: str, *, dist: str | None = None, value: str | None = None,
                name: str | None = None) -> None:
        assert module.startswith(PREFIX)
        dist = dist or module.replace("_", "-")
        (site / f"{module}.py").write_text(textwrap.dedent(code))
        info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(
            f"[{plugins.ENTRY_POINT_GROUP}]\n{name or module} = {value or module}\n"
        )

    yield install
    for reg, entries in zip(REGISTRIES, saved):
        reg._entries.clear()
        reg._entries.update(entries)
    for mod in [m for m in sys.modules if m.startswith(PREFIX)]:
        del sys.modules[mod]


def example_plugin_installed() -> None:
    """Skip (or, under CI, fail) unless the example plugin is installed."""
    names = {ep.name for ep in importlib.metadata.entry_points(group=plugins.ENTRY_POINT_GROUP)}
    if "spectra_halton" not in names:
        message = "example plugin not installed: pip install -e plugins/spectra_halton"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


# -- discovery ------------------------------------------------------------------------------------
def test_plugin_loads_lazily_once_and_registers(fake_plugins: Install) -> None:
    fake_plugins(f"{PREFIX}good", SAMPLER_PLUGIN.format(name="fp_sampler"), dist="fake-good")
    assert f"{PREFIX}good" not in sys.modules  # nothing imported before a registry is read
    assert "fp_sampler" in SAMPLERS.names()
    entry = SAMPLERS.entry("fp_sampler")
    assert entry.provider == f"{PREFIX}good"
    assert entry.description == "Plugin sampler fp_sampler: iid N(0, 1) rows."
    w = SAMPLERS.build("fp_sampler", dim=3, num_features=5).sample()
    assert w.shape == (5, 3)
    loaded = plugins.loaded_plugins()
    assert list(loaded) == [f"{PREFIX}good"]
    assert plugins.describe(loaded[f"{PREFIX}good"]) == (
        f"'{PREFIX}good' (package 'fake-good 1.0', entry point spectra.plugins:{PREFIX}good)"
    )
    listing = format_listing(["samplers"])
    line = next(ln for ln in listing.splitlines() if ln.strip().startswith("fp_sampler"))
    assert line.split()[:2] == ["fp_sampler", f"{PREFIX}good"]
    assert line.endswith("Plugin sampler fp_sampler: iid N(0, 1) rows.")


def test_function_entry_point_is_called_once(fake_plugins: Install) -> None:
    code = '''
    CALLS = []


    def register():
        from spectra.registry import FEATURE_MAPS
        from spectra.features import FeatureMap

        class Identity(FeatureMap):
            """Identity map (test only)."""

        CALLS.append(1)
        FEATURE_MAPS.register("fp_identity")(Identity)
    '''
    fake_plugins(f"{PREFIX}fn", code, value=f"{PREFIX}fn:register")
    for _ in range(3):
        assert "fp_identity" in FEATURE_MAPS.names()
        assert "fp_identity" in FEATURE_MAPS
    assert sys.modules[f"{PREFIX}fn"].CALLS == [1]


def test_cli_lists_plugins(fake_plugins: Install, capsys: pytest.CaptureFixture[str]) -> None:
    fake_plugins(f"{PREFIX}cli", SAMPLER_PLUGIN.format(name="fp_cli"), dist="fake-cli")
    assert main(["list", "plugins"]) == 0
    out = capsys.readouterr().out
    assert "plugins (1 loaded, 0 skipped):" in out and "'fake-cli 1.0'" in out
    assert main(["list", "samplers"]) == 0
    assert "fp_cli" in capsys.readouterr().out


# -- bad input ------------------------------------------------------------------------------------
BROKEN = '''
from spectra.registry import SAMPLERS


@SAMPLERS.register("fp_partial")
class Partial:
    """Registered before the failure."""


raise RuntimeError("boom: missing CUDA toolkit")
'''


def test_broken_plugin_raises_one_clear_error(fake_plugins: Install) -> None:
    fake_plugins(f"{PREFIX}broken", BROKEN, dist="fake-broken")
    for _ in range(2):  # every read reports it, the same way
        with pytest.raises(plugins.PluginLoadError) as info:
            SAMPLERS.names()
        message = str(info.value)
        assert f"Spectra plugin '{PREFIX}broken'" in message
        assert "package 'fake-broken 1.0'" in message
        assert f"entry point spectra.plugins:{PREFIX}broken" in message
        assert "RuntimeError: boom: missing CUDA toolkit" in message
        assert "SPECTRA_SKIP_BROKEN_PLUGINS=1" in message
        assert isinstance(info.value.__cause__, RuntimeError)
        assert "fp_partial" not in SAMPLERS._entries  # what it registered is rolled back
        assert f"{PREFIX}broken" not in sys.modules


def test_plugin_with_missing_dependency_names_it(fake_plugins: Install) -> None:
    fake_plugins(f"{PREFIX}nodep", "import fakeplug_not_installed_anywhere\n")
    with pytest.raises(plugins.PluginLoadError, match=(
        rf"'{PREFIX}nodep'.*ModuleNotFoundError: No module named "
        r"'fakeplug_not_installed_anywhere'"
    )):
        FEATURE_MAPS.names()


def test_entry_point_to_missing_module(fake_plugins: Install) -> None:
    fake_plugins(f"{PREFIX}typo", "", value=f"{PREFIX}tpyo")
    with pytest.raises(plugins.PluginLoadError, match=rf"spectra.plugins:{PREFIX}tpyo"):
        ATTENTIONS.names()


@pytest.mark.parametrize("how", ["env", "argument"])
def test_skip_broken_plugins_with_a_warning(
    fake_plugins: Install, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    fake_plugins(f"{PREFIX}broken", BROKEN, dist="fake-broken")
    fake_plugins(f"{PREFIX}fine", SAMPLER_PLUGIN.format(name="fp_fine"))
    with pytest.warns(RuntimeWarning, match=rf"'{PREFIX}broken'.*RuntimeError: boom.*skipped"):
        if how == "env":
            monkeypatch.setenv(plugins.SKIP_ENV, "1")
            names = SAMPLERS.names()
        else:
            plugins.load_plugins(skip_broken=True)
            names = SAMPLERS.names()
    assert "fp_fine" in names and "fp_partial" not in names
    assert list(plugins.broken_plugins()) == [f"{PREFIX}broken"]
    assert list(plugins.loaded_plugins()) == [f"{PREFIX}fine"]


def test_cli_reports_broken_plugin_in_one_line(
    fake_plugins: Install, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_plugins(f"{PREFIX}broken", BROKEN)
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: Spectra plugin '{PREFIX}broken'") and "boom" in err


def test_name_taken_by_the_core_is_an_error_naming_both_packages(
    fake_plugins: Install, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_plugins(f"{PREFIX}dup", SAMPLER_PLUGIN.format(name="gaussian"), dist="fake-dup")
    monkeypatch.setenv(plugins.SKIP_ENV, "1")  # a clash is never skipped
    with pytest.raises(DuplicateComponentError) as info:
        SAMPLERS.names()
    message = str(info.value)
    assert "sampler 'gaussian' is registered twice" in message
    assert "(package 'spectra')" in message and f"(package '{PREFIX}dup')" in message
    assert "'fake-dup 1.0'" in message
    assert SAMPLERS._entries["gaussian"].provider == "spectra"


def test_two_plugins_registering_one_name(fake_plugins: Install) -> None:
    fake_plugins(f"{PREFIX}alpha", SAMPLER_PLUGIN.format(name="fp_same"), dist="fake-alpha")
    fake_plugins(f"{PREFIX}beta", SAMPLER_PLUGIN.format(name="fp_same"), dist="fake-beta")
    with pytest.raises(DuplicateComponentError) as info:
        SAMPLERS.names()
    message = str(info.value)
    assert f"(package '{PREFIX}alpha')" in message and f"(package '{PREFIX}beta')" in message


# -- the example plugin, installed ----------------------------------------------------------------
def test_example_plugin_components_are_registered_and_listed() -> None:
    example_plugin_installed()
    assert "spectra_halton" in plugins.load_plugins()
    assert SAMPLERS.entry("halton").provider == "spectra_halton"
    assert FEATURE_MAPS.entry("poisrf").provider == "spectra_halton"
    proc = subprocess.run([sys.executable, "-m", "spectra", "list"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    rows = {ln.split()[0]: ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("  ")}
    assert rows["halton"] == rows["poisrf"] == "spectra_halton"
    assert rows["gaussian"] == rows["posrf"] == "spectra"
    assert "Halton" in proc.stdout and "DIRF" in proc.stdout


def test_example_plugin_configs_are_visible_to_hydra() -> None:
    """The plugin ships no YAML and no Hydra plugin: its components' ConfigStore nodes (from the
    registry) make the groups list exactly the registered names, and glob sweeps (the
    Spectraformer grid) include the plugin."""
    example_plugin_installed()
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from spectra.training.config_store import group_options

    groups = {"attention/sampler": SAMPLERS, "attention/feature_map": FEATURE_MAPS}
    for group, registry in groups.items():
        assert group_options(group, CONF) == registry.names()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        sweep = parser.parse_overrides(
            ["attention/sampler=glob(*)", "attention/feature_map=glob(*)"]
        )
        assert "halton" in list(sweep[0].sweep_string_iterator())
        assert "poisrf" in list(sweep[1].sweep_string_iterator())
    assert not list(EXAMPLE.rglob("*.yaml")), "the example plugin needs no Hydra YAML"


def test_plugin_components_compose_and_build(compose_config) -> None:
    example_plugin_installed()
    from spectra.training.attention import attention_spec

    cfg = compose_config(["attention=spectraformer", "attention/sampler=halton",
                    "attention/feature_map=poisrf", "attention.num_features=8", "model.head_dim=4"])
    assert dict(cfg.attention.sampler) == {"name": "halton", "randomization": "permute"}
    assert dict(cfg.attention.feature_map) == {"name": "poisrf", "lam": None}
    module = attention_spec(cfg.attention).build(0)
    q, k, v = (0.5 * torch.randn(1, 2, 6, 4, generator=torch.Generator().manual_seed(i))
               for i in range(3))
    out = module(q, k, v, mask=torch.tensor([[True] * 5 + [False]]))
    assert out.shape == (1, 2, 6, 4) and torch.isfinite(out).all()


def test_plugin_config_naming_an_unregistered_component_fails_with_valid_names(
    tmp_path: Path, compose_config) -> None:
    """A plugin's YAML (here from an extra search-path entry) whose ``name`` nobody registered:
    the run fails right after composition, before any data is touched, listing valid names."""
    from spectra.training import train

    group = tmp_path / "plugin_conf" / "attention" / "sampler"
    group.mkdir(parents=True)
    (group / "ghost.yaml").write_text("name: ghost_sampler\n")
    missing = tmp_path / "no-data"  # exists, holds nothing: loading would raise
    missing.mkdir()
    cfg = compose_config([f"hydra.searchpath=[file://{tmp_path / 'plugin_conf'}]",
                    "attention=spectraformer", "attention/sampler=ghost", "debug=fdr",
                    f"task.data_dir={missing}", "task.prepare=null"])
    assert cfg.attention.sampler.name == "ghost_sampler"
    with pytest.raises(UnknownComponentError) as info:
        train(cfg)
    message = str(info.value)
    assert "unknown sampler 'ghost_sampler'" in message
    for name in SAMPLERS.names():
        assert name in message
    assert not any(missing.iterdir())


FAST = [*TINY_MODEL, "attention.num_features=16", "task.pad_to=longest", "task.batch_size=8",
        "trainer.enable_model_summary=false", "callbacks.progress_bar.refresh_rate=0"]


@pytest.mark.slow
def test_train_py_runs_with_plugin_components(tmp_path: Path) -> None:
    """``python train.py attention=spectraformer attention/feature_map=poisrf debug=fdr`` as a
    user runs it (plus ``attention/sampler=halton``), on the tiny ListOps fixture."""
    example_plugin_installed()
    if not (ROOT / "train.py").is_file():
        pytest.skip("train.py does not exist yet")
    import lra_data

    data = tmp_path / "data"
    lra_data.write_fixture("lra_listops", data, rows_per_split=16, seed=0)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "attention=spectraformer",
         "attention/feature_map=poisrf", "attention/sampler=halton", "debug=fdr",
         "task=lra_listops", f"task.data_dir={data}", f"hydra.run.dir={run_dir}", *FAST],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + "\n" + proc.stderr[-6000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["run_name"] == "lra_listops.random_features.halton.poisrf.m16.s0"
    assert metrics["global_step"] == 1 and 0.0 <= metrics["test/acc"] <= 1.0
