"""The datasets the framework knows, each named once: its timeline, its metrics group, its converter and raw layout.

Every :class:`~smartpretrain.data.taxonomy.Dataset` member has one :class:`DatasetInfo` here (a test refuses a
member without one), and code that needs "all datasets" asks this module instead of listing names: the per-dataset
metric breakdown of fine-tuning and evaluation is :func:`metric_datasets`, each agent's group is
:func:`metric_group` of its scene's dataset. So a new dataset reports its own metrics from the moment it is
registered. How to add one: ``docs/datasets.md``.

Converters are named by dotted path and imported on demand (:meth:`DatasetInfo.converter_class`): looking a dataset
up never imports a raw-format reader (the AV2 converter imports the ``av2`` package). The step counts are the ones
the converter produces by default and ``configs/data/{name}.yaml`` declares (``tests/data/test_registry.py`` keeps
the three in agreement).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from smartpretrain.data.formats import av1, av2, eth_ucy
from smartpretrain.data.taxonomy import Dataset

if TYPE_CHECKING:
    from smartpretrain.data.converters.base import SceneConverter


@dataclass(frozen=True)
class Timeline:
    """A dataset's native timeline as converted: ``num_steps`` steps of ``dt`` seconds, the present at
    ``current_step`` (the history ends there, the future is every later step)."""

    dt: float
    num_steps: int
    current_step: int

    def __post_init__(self) -> None:
        if not (self.dt > 0 and 0 <= self.current_step < self.num_steps):
            raise ValueError(f"bad timeline {self}: need dt > 0 and 0 <= current_step < num_steps")

    @property
    def num_historical_steps(self) -> int:
        return self.current_step + 1

    @property
    def num_future_steps(self) -> int:
        return self.num_steps - self.current_step - 1


class MetricConvention(StrEnum):
    """Which field's forecasting metrics a dataset's agents are scored with, on top of the AV2 ones every dataset
    gets (``minFDE_6``, ``{group}/minFDE_6``, ...); see :mod:`smartpretrain.metrics.suite` and ``docs/metrics.md``.

    * ``AV2``: the Argoverse metrics only (minADE_K / minFDE_K / MR_K / brier-minFDE_K);
    * ``WOMD``: also the Waymo Open Motion challenge's minADE / minFDE / MR at 3, 5 and 8 s
      (:mod:`smartpretrain.metrics.womd`);
    * ``PEDESTRIAN``: also the pedestrian field's best-of-K ADE_K / FDE_K (:mod:`smartpretrain.metrics.pedestrian`).
    """

    AV2 = "av2"
    WOMD = "womd"
    PEDESTRIAN = "pedestrian"


@dataclass(frozen=True)
class DatasetInfo:
    """What the framework knows about one dataset.

    Attributes:
        name: the :class:`Dataset` member (the ``Scene.dataset`` of its scenes, the cache folder name).
        title: the dataset's public name.
        timeline: the converted timeline; None where scenes bring their own (``synthetic``: scenes built in code).
        metric_group: per-dataset metrics of its agents are reported as ``{metric_group}/{metric}_{K}``
            (``val_av1/minFDE_6``); datasets sharing a group are reported together.
        converter: ``"module:Class"`` of its :class:`~smartpretrain.data.converters.base.SceneConverter`; None
            when it has no converter (yet).
        config: the name of its ``configs/data/`` entry (``data=<config>``); None when it has none.
        raw_layout: where its raw files live and what they hold, in one or two sentences.
        metric_convention: the field whose metrics its agents get besides the AV2 ones (:class:`MetricConvention`;
            AV2 only by default).
    """

    name: Dataset
    title: str
    timeline: Timeline | None
    metric_group: str
    converter: str | None
    config: str | None
    raw_layout: str
    metric_convention: MetricConvention = MetricConvention.AV2

    def __post_init__(self) -> None:
        if "/" in self.metric_group or not self.metric_group:
            raise ValueError(f"{self.name}: metric_group {self.metric_group!r} must be a non-empty name without '/'")

    def converter_class(self) -> type[SceneConverter]:
        """The converter class, imported now (ValueError for a dataset without a converter)."""
        if self.converter is None:
            raise ValueError(f"dataset {self.name.value!r} has no converter")
        module, _, attribute = self.converter.partition(":")
        return getattr(importlib.import_module(module), attribute)


_INFOS = (
    DatasetInfo(
        name=Dataset.AV1,
        title="Argoverse 1 motion forecasting",
        timeline=Timeline(dt=av1.DT, num_steps=av1.NUM_STEPS, current_step=av1.CURRENT_STEP),
        metric_group="av1",
        converter="smartpretrain.data.converters.av1:Av1Converter",
        config="av1",
        raw_layout="{raw_root}/{split}/data/{seq_id}.csv (test split: 20 steps), optional city vector maps "
        "{map_root}/pruned_argoverse_{CITY}_{ID}_vector_map.xml; see smartpretrain.data.formats.av1",
    ),
    DatasetInfo(
        name=Dataset.AV2,
        title="Argoverse 2 motion forecasting",
        timeline=Timeline(dt=av2.DT, num_steps=av2.NUM_STEPS, current_step=av2.CURRENT_STEP),
        metric_group="av2",
        converter="smartpretrain.data.converters.av2:Av2Converter",
        config="av2",
        raw_layout="{raw_root}/{split}/{scenario_id}/scenario_{scenario_id}.parquet + log_map_archive_*.json; "
        "see smartpretrain.data.formats.av2",
    ),
    DatasetInfo(
        name=Dataset.WOMD,
        title="Waymo Open Motion Dataset (Scenario protos)",
        timeline=Timeline(dt=0.1, num_steps=91, current_step=10),
        metric_group="womd",
        metric_convention=MetricConvention.WOMD,
        converter="smartpretrain.data.converters.womd:WomdConverter",
        config="womd",
        raw_layout="{raw_root}/{training,validation,testing}/*.tfrecord-XXXXX-of-YYYYY, one Scenario per record "
        "(the older tf.Example release is refused)",
    ),
    DatasetInfo(
        name=Dataset.ETH_UCY,
        title="ETH/UCY pedestrian trajectories",
        timeline=Timeline(dt=eth_ucy.DT, num_steps=eth_ucy.NUM_STEPS, current_step=eth_ucy.CURRENT_STEP),
        metric_group="eth_ucy",
        metric_convention=MetricConvention.PEDESTRIAN,
        converter="smartpretrain.data.converters.eth_ucy:EthUcyConverter",
        config="eth_ucy",
        raw_layout="{raw_root}/{recording}.txt, tab-separated 'frame ped_id x y' rows (metres, frame step 10 = "
        "2.5 Hz); splits {fold}_{train,val,test} of the leave-one-scene-out folds; see "
        "smartpretrain.data.formats.eth_ucy",
    ),
    DatasetInfo(
        name=Dataset.SYNTHETIC,
        title="scenes built in code (tests, examples)",
        timeline=None,
        metric_group="synthetic",
        converter=None,
        config=None,
        raw_layout="no raw files; the synthetic generator (smartpretrain.data.synthetic) writes AV1 / AV2 raw "
        "files instead, which convert as av1 / av2",
    ),
)

#: every registered dataset, in :class:`Dataset` order
DATASETS: dict[Dataset, DatasetInfo] = {info.name: info for info in _INFOS}


def dataset_info(name: Dataset | str) -> DatasetInfo:
    """The entry of a dataset (``"av1"`` or ``Dataset.AV1``); ValueError naming the registered ones otherwise."""
    try:
        return DATASETS[Dataset(name)]
    except (ValueError, KeyError):
        known = ", ".join(d.value for d in DATASETS)
        raise ValueError(f"dataset {str(name)!r} is not registered in smartpretrain.data.registry ({known})") from None


def metric_group(name: Dataset | str) -> str:
    """The per-dataset metrics group of a dataset's agents."""
    return dataset_info(name).metric_group


def metric_datasets() -> tuple[str, ...]:
    """The groups of the per-dataset metric breakdown (``ForecastingMetrics(datasets=...)``), in registry order."""
    return tuple(dict.fromkeys(info.metric_group for info in DATASETS.values()))


def metric_convention(name: Dataset | str) -> MetricConvention:
    """The metric convention of a dataset's agents (:attr:`DatasetInfo.metric_convention`)."""
    return dataset_info(name).metric_convention


def render_markdown() -> str:
    """The registry as a Markdown table (kept in sync in docs/datasets.md)."""
    rows = [
        "| dataset | title | dt (s) | steps | current step | history / future | metrics group | converter | config |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for info in DATASETS.values():
        t = info.timeline
        cells = [f"`{info.name.value}`", info.title]
        if t is None:
            cells += ["-"] * 4
        else:
            history = f"{t.num_historical_steps} / {t.num_future_steps}"
            cells += [f"{t.dt:g}", str(t.num_steps), str(t.current_step), history]
        cells.append(f"`{info.metric_group}`")
        cells.append("-" if info.converter is None else f"`{info.converter}`")
        cells.append("-" if info.config is None else f"`configs/data/{info.config}.yaml`")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


__all__ = [
    "DATASETS",
    "DatasetInfo",
    "MetricConvention",
    "Timeline",
    "dataset_info",
    "metric_convention",
    "metric_datasets",
    "metric_group",
    "render_markdown",
]
