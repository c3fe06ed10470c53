"""Composing the Hydra configs of ``configs/`` from Python (drivers, benchmarks, notebooks) as the entry points do."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def compose_config(name: str, overrides: list[str], resolve: bool = True) -> DictConfig:
    """``configs/{name}.yaml`` with Hydra ``overrides`` (e.g. ``["data=av1", "max_epochs=3"]``), resolved by default."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides)
    if resolve:
        OmegaConf.resolve(cfg)
    return cfg
