"""Where a run's scenes come from: one dataset, or a weighted mixture of datasets (``configs/data/mix_*.yaml``).

A single-dataset config (``configs/data/av2.yaml``, ...) is one source, ``{cache_root}/{data.name}/{split}``. A
mixture config lists ``components``, each a cache folder with its own splits, SSL view length and weight::

    components:
      av1:  {cache: ${cache_root}/av1, train_split: train, val_split: val, view_window: 20, weight: null}
      womd: {cache: ${cache_root}/womd, train_split: train, val_split: val, view_window: 40, weight: null}
    mixture: {replacement: false, num_samples: null}

Weights: all ``null`` -> by scene count; all numbers -> those ratios (a component with weight 0 is left out).

A run reads its config's sources once (:meth:`RunSources.of`) and hands them to its checks, its task and its
data module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from smartpretrain.data.datamodule import MixtureSpec


@dataclass(frozen=True)
class DataSource:
    """One cache split folder feeding a run, with its name (for logs), SSL view length and mixture weight."""

    name: str
    path: Path
    view_window: int
    weight: float | None = None


def is_mixture(cfg: DictConfig) -> bool:
    return cfg.data.get("components") is not None


def data_sources(cfg: DictConfig, split: str) -> list[DataSource]:
    """The sources of ``split`` (``"train"``, ``"val"`` or ``"test"``) for a composed run config.

    ``split`` selects ``cfg.{split}_split`` (the split folder name) for a single dataset and each component's
    ``{split}_split`` for a mixture (default: the run's own). Components whose split is null are skipped.
    """
    key = f"{split}_split"
    default_split = cfg.get(key, split)
    if not is_mixture(cfg):
        window = int(cfg.data.get("view_window") or cfg.data.get("num_historical_steps") or 0)
        return [DataSource(str(cfg.data.name), Path(cfg.cache_root) / cfg.data.name / str(default_split), window)]
    sources = []
    for name, comp in cfg.data.components.items():
        if comp is None:
            continue
        folder = comp.get(key, default_split)
        if folder is None:
            continue
        weight = comp.get("weight")
        if weight is not None and float(weight) == 0.0:
            continue
        cache = Path(comp.get("cache") or Path(cfg.cache_root) / str(name))
        window = int(comp.get("view_window") or cfg.data.view_window)
        sources.append(DataSource(str(name), cache / str(folder), window, None if weight is None else float(weight)))
    if not sources:
        raise ValueError(f"data.components: no component has a {key} (or every weight is 0)")
    return sources


@dataclass(frozen=True)
class RunSources:
    """The sources of a run's splits, built once from its config."""

    train: tuple[DataSource, ...]
    #: None: the run validates nothing (pre-training with ``val_split=null``)
    val: tuple[DataSource, ...] | None

    @classmethod
    def of(cls, cfg: DictConfig, *, validate: bool = True) -> RunSources:
        """The ``train`` sources of ``cfg`` and, with ``validate``, its ``val`` sources."""
        return cls(tuple(data_sources(cfg, "train")), tuple(data_sources(cfg, "val")) if validate else None)

    def by_split(self) -> dict[str, tuple[DataSource, ...]]:
        """``{"train": ..., "val": ...}`` for the splits the run reads."""
        return {"train": self.train} | ({} if self.val is None else {"val": self.val})


def mixture_spec(cfg: DictConfig, sources: Sequence[DataSource]) -> MixtureSpec | None:
    """The train mixture of a mixture config (None for a single dataset)."""
    if not is_mixture(cfg):
        return None
    weights = [s.weight for s in sources]
    if any(w is None for w in weights) and not all(w is None for w in weights):
        named = ", ".join(f"{s.name}={s.weight}" for s in sources)
        raise ValueError(f"data.components: give every component a weight or none (by scene count); got {named}")
    mix: dict[str, Any] = OmegaConf.to_container(cfg.data.get("mixture") or OmegaConf.create({}), resolve=True)
    return MixtureSpec(
        weights=None if weights[0] is None else [float(w) for w in weights],  # type: ignore[arg-type]
        num_samples=mix.get("num_samples"),
        replacement=bool(mix.get("replacement", False)),
        seed=int(mix.get("seed", cfg.get("seed", 0))),
    )


__all__ = ["DataSource", "RunSources", "data_sources", "is_mixture", "mixture_spec"]
