"""Hydra config tree: presets compose and build, the tree mirrors the registries, paper values."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from spectra.registry import ATTENTIONS, FEATURE_MAPS, SAMPLERS, check_options
from spectra.training.attention import attention_spec

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def hydra_ctx():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield GlobalHydra.instance().config_loader()


def make(overrides: list[str], name: str = "train"):
    cfg = compose(name, overrides=["paths.output_dir=/tmp/unused", *overrides])
    return cfg


def group_options(loader, group: str) -> list[str]:
    return sorted(loader.get_group_options(group))


def tiny_forward(module: torch.nn.Module, d: int) -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, d, generator=g) * 0.5 for _ in range(3))
    mask = torch.tensor([[True] * 5 + [False]])
    out = module(q, k, v, mask=mask)
    assert out.shape == (1, 2, 6, d) and torch.isfinite(out).all()


# -- the config tree mirrors the registries (ConfigStore nodes from the registries) ---------------
@pytest.mark.parametrize(
    ("group", "registry"),
    [("attention/sampler", SAMPLERS), ("attention/feature_map", FEATURE_MAPS)],
)
def test_hydra_sees_exactly_the_registered_components(hydra_ctx, group, registry) -> None:
    assert group_options(hydra_ctx, group) == registry.names()
    assert not (CONF / group).exists(), f"{group} comes from the registry; no YAML files there"


@pytest.mark.parametrize(
    ("group", "registry"),
    [("attention/sampler", SAMPLERS), ("attention/feature_map", FEATURE_MAPS)],
)
def test_component_nodes_name_themselves_and_their_options_are_accepted(
    hydra_ctx, group, registry
) -> None:
    """Each stored node composes under ``attention=spectraformer`` with the component's own
    defaults, and the component accepts every option the node lists."""
    part = group.split("/")[1]
    for name in registry.names():
        cfg = make(["attention=spectraformer", f"{group}={name}"])
        node = OmegaConf.to_container(cfg.attention)
        options = {k: v for k, v in node[part].items() if k != "name"}
        assert node[part]["name"] == name
        assert not {"dim", "num_features", "seed", "layer_index"} & set(options), (
            "the attention sets these (base contract), so a node must not list them"
        )
        check_options(registry.get(name), options, what=f"{group}={name}")


def test_every_registered_attention_has_a_preset(hydra_ctx) -> None:
    preset_names = set()
    for preset in group_options(hydra_ctx, "attention"):
        preset_names.add(make([f"attention={preset}"]).attention.name)
    assert set(ATTENTIONS.names()) <= preset_names
    assert preset_names <= set(ATTENTIONS.names()), "a preset names an unregistered attention"


# -- composition and building ----------------------------------------------------------------------
def _presets() -> list[str]:
    return sorted(p.stem for p in (CONF / "attention").glob("*.yaml"))


@pytest.mark.parametrize("preset", _presets())
def test_attention_preset_composes_and_builds_a_model(hydra_ctx, preset) -> None:
    from spectra.training.module import build_model

    cfg = make([f"attention={preset}", "task=lra_listops"])
    if cfg.attention.name not in ATTENTIONS.names():
        pytest.skip(f"attention {cfg.attention.name!r} is not registered yet")
    assert cfg.attention.head_dim == cfg.model.head_dim == 32
    container = OmegaConf.to_container(cfg, resolve=True)
    model = build_model(container, max_positions=64)
    ids = torch.randint(1, 10, (2, 40))
    ids[1, 30:] = 0
    logits = model({"input_ids": ids, "mask": ids != 0})
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def test_random_feature_presets_expose_m_head_dim_redraw_and_seed(hydra_ctx) -> None:
    for preset in ("favor_plus", "favor_pp", "favor_sharp", "performer_trig", "spectraformer"):
        att = make([f"attention={preset}", "seed=7"]).attention
        assert att.num_features == 128
        assert att.head_dim == 32 and att.redraw_interval is None and att.seed == 7
    parts = {
        p: (
            make([f"attention={p}"]).attention.sampler.name,
            make([f"attention={p}"]).attention.feature_map.name,
        )
        for p in ("favor_plus", "favor_pp", "favor_sharp", "performer_trig")
    }
    assert parts == {
        "favor_plus": ("orthogonal", "posrf"),
        "favor_pp": ("orthogonal", "oprf"),
        "favor_sharp": ("orthogonal", "saderf"),
        "performer_trig": ("orthogonal", "trig"),
    }


@pytest.mark.parametrize("sampler", SAMPLERS.names())
def test_sampler_by_feature_map_grid_composes_and_builds(hydra_ctx, sampler) -> None:
    for feature_map in FEATURE_MAPS.names():
        cfg = make(
            [
                "attention=spectraformer",
                f"attention/sampler={sampler}",
                f"attention/feature_map={feature_map}",
                "attention.num_features=8",
                "model.head_dim=4",
            ]
        )
        assert cfg.attention.sampler.name == sampler
        assert cfg.attention.feature_map.name == feature_map
        if "random_features" not in ATTENTIONS.names():
            continue
        spec = attention_spec(cfg.attention)
        tiny_forward(spec.build(0), 4)


def test_overriding_one_part_keeps_the_other(hydra_ctx) -> None:
    att = make(["attention=favor_sharp", "attention/sampler=qmc"]).attention
    assert (att.sampler.name, att.feature_map.name) == ("qmc", "saderf")
    att = make(
        ["attention=favor_plus", "attention/feature_map=gerf", "attention.feature_map.A=-0.05"]
    ).attention
    assert (att.sampler.name, att.feature_map.name, att.feature_map.A) == (
        "orthogonal",
        "gerf",
        -0.05,
    )


# -- the paper protocol is exactly docs/design.md §5 ----------------------------------------
PAPER_TASKS = {
    # task: (max_length, batch, lr)
    "lra_listops": (2000, 32, 1e-4),
    "lra_text": (4000, 32, 1e-4),
    "lra_retrieval": (4000, 16, 2e-4),
}


@pytest.mark.parametrize("task", sorted(PAPER_TASKS))
def test_paper_protocol_values(hydra_ctx, task) -> None:
    cfg = make(["experiment=lra_paper", f"task={task}", "attention=favor_sharp"])
    m = cfg.model
    assert (m.embed_dim, m.ffn_dim, m.num_layers, m.num_heads, m.head_dim) == (64, 128, 2, 2, 32)
    assert m.head_hidden_dim == 128  # retrieval MLP 4·64 = 256 → 128 → 2
    assert cfg.attention.num_features == 128 and cfg.attention.head_dim == 32
    assert cfg.optim.eps == 1e-6 and cfg.optim._target_ == "torch.optim.AdamW"
    assert cfg.scheduler.warmup_steps == 1000 and cfg.scheduler.anneal_strategy == "linear"
    assert cfg.trainer.gradient_clip_val == 1.0 and cfg.trainer.max_steps == 50_000
    length, batch, lr = PAPER_TASKS[task]
    assert (cfg.task.max_length, cfg.task.batch_size, cfg.optim.lr) == (length, batch, lr)
    if task == "lra_listops":
        assert cfg.task.pad_to == 2048


def test_quickstart_and_debug_presets_compose(hydra_ctx) -> None:
    cfg = make(["experiment=quickstart"])
    assert cfg.task.name == "lra_listops" and cfg.trainer.accelerator == "cpu"
    assert cfg.task.prepare is not None, "the quickstart must run with no data prepared"
    for debug in group_options(hydra_ctx, "debug"):
        make([f"debug={debug}"])
    for trainer in ("cpu", "gpu", "ddp", "ddp_sim"):
        make([f"trainer={trainer}"])
    ddp_sim = make(["trainer=ddp_sim"]).trainer
    assert (ddp_sim.accelerator, ddp_sim.devices, ddp_sim.strategy) == ("cpu", 2, "ddp")
    for logger in ("csv", "tensorboard", "wandb"):
        assert logger in make([f"logger={logger}"]).logger


def test_eval_config_composes(hydra_ctx) -> None:
    cfg = make(["ckpt_path=x.ckpt", "task.data_dir=/data"], name="eval")
    assert cfg.split == "test" and cfg.task.data_dir == "/data"


def test_named_random_feature_presets_extend_the_random_features_preset(hydra_ctx) -> None:
    base = OmegaConf.to_container(make(["attention=random_features"]).attention)
    for preset in ("favor_plus", "favor_pp", "favor_sharp", "performer_trig", "spectraformer"):
        node = OmegaConf.to_container(make([f"attention={preset}"]).attention)
        same = {k: v for k, v in node.items() if k not in ("sampler", "feature_map")}
        assert same == {k: v for k, v in base.items() if k not in ("sampler", "feature_map")}


def test_optim_and_scheduler_are_typed(hydra_ctx) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match=r"optim\.lr=abc"):
        make(["optim.lr=abc"])
    with pytest.raises(ConfigCompositionException, match=r"scheduler\.warmup_steps=soon"):
        make(["scheduler.warmup_steps=soon"])
    assert make(["optim.lr=0.5"]).optim.lr == 0.5
