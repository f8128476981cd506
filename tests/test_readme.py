"""The README's Quickstart is what CI runs: its install and test commands appear verbatim in
``.ci/run``, and they install everything the test command collects (the plugins under
``testpaths``), so a fresh clone that follows the README passes as CI does."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    """The command lines of the README's first ``bash`` block under ``## Quickstart``."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README's Quickstart has no ```bash block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def ci_commands() -> list[str]:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_quickstart_has_install_train_and_test_commands():
    commands = quickstart_commands()
    assert any(c.startswith("pip install") for c in commands)
    assert "python train.py experiment=quickstart" in commands
    assert "python -m pytest -q" in commands


@pytest.mark.parametrize("command", [c for c in quickstart_commands() if c.startswith("pip ")])
def test_readme_install_commands_are_ci_commands(command):
    assert command in ci_commands(), f"README installs with {command!r}; .ci/run does not"


def test_readme_test_command_is_ci_test_command():
    assert "python -m pytest -q" in ci_commands()
    assert not any(c.startswith("pip install") and c not in quickstart_commands()
                   for c in ci_commands() if "--upgrade pip" not in c), \
        ".ci/run installs something the README does not"


def installed_paths() -> set[Path]:
    """Local paths that the README's install lines install (``-e PATH`` or ``PATH[extras]``)."""
    paths = set()
    for command in quickstart_commands():
        if not command.startswith("pip install"):
            continue
        for arg in shlex.split(command)[2:]:
            if arg.startswith("-"):
                continue
            candidate = ROOT / re.sub(r"\[.*\]$", "", arg)
            if candidate.exists():
                paths.add(candidate.resolve())
    return paths


def test_readme_installs_every_plugin_the_tests_collect(pytestconfig):
    projects = [project for testpath in pytestconfig.getini("testpaths")
                for project in sorted(p.parent for p in (ROOT / testpath).glob("*/pyproject.toml"))]
    assert projects, "no plugin project under testpaths (expected plugins/spectra_halton)"
    for project in projects:
        assert project.resolve() in installed_paths(), (
            f"pytest collects {project.relative_to(ROOT)} (testpaths), but the README's install "
            f"commands do not install it"
        )
        packages = [p.name for p in (project / "src").glob("*") if (p / "__init__.py").exists()]
        packages += [p.name for p in project.iterdir() if (p / "__init__.py").exists()]
        assert packages, f"{project} holds no package"
        for package in packages:
            assert importlib.util.find_spec(package) is not None, f"{package} is not installed"


def readme_run_commands() -> list[str]:
    """Every ``python train.py …`` / ``python eval.py …`` command (continuation lines joined) of
    the bash blocks of the README and of the documents under docs/."""
    lines = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), re.S):
            joined = re.sub(r"\\[^\S\n]*(#[^\n]*)?\n\s*", " ", block)
            lines += [line.split("  #")[0].split(" # ")[0].strip() for line in joined.splitlines()
                      if line.strip().startswith(("python train.py", "python eval.py"))]
    return list(dict.fromkeys(lines))


def test_readme_shows_run_commands():
    assert len(readme_run_commands()) >= 5


@pytest.mark.parametrize("command", readme_run_commands())
def test_readme_run_command_composes(command, compose_config):
    """Each command's overrides compose (a multirun: its first job) and name registered
    components — what ``train.py`` checks before it reads any data."""
    from omegaconf import OmegaConf

    words = shlex.split(re.sub(r"<[a-z_]+>", "placeholder", command))  # outputs/<run>/…
    name = "eval" if words[1] == "eval.py" else "train"
    overrides = [w for w in words[2:] if w != "-m"]
    first_job = [re.sub(r"=([^,\[\]]+),.*$", r"=\1", o) for o in overrides]
    cfg = compose_config(first_job, name=name)
    container = OmegaConf.to_container(cfg, resolve=False)
    assert container, command
    if name == "train":
        from spectra.training.attention import attention_spec

        assert attention_spec(cfg.attention).build(0) is not None
