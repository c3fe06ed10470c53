"""The dataset registry: every dataset named once, and everything that lists datasets agrees with it."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from smartpretrain.backbones.base import EvalTargets
from smartpretrain.data.converters.base import SceneConverter
from smartpretrain.data.registry import (
    DATASETS,
    DatasetInfo,
    Timeline,
    dataset_info,
    metric_datasets,
    metric_group,
)
from smartpretrain.data.taxonomy import Dataset
from smartpretrain.metrics.forecasting import ForecastingMetrics, agent_datasets
from smartpretrain.tasks.finetune import FinetuneTask
from tests.conftest import REPO

CONFIGS = REPO / "configs" / "data"
WOMD_FIXTURE = REPO.parent / "shared" / "fixtures" / "womd" / "motion_data_one_scenario.tfrecord"


def _config(name: str) -> dict:
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())


def test_every_dataset_member_is_registered_in_order() -> None:
    # a Dataset member without an entry would have no metrics group, no timeline and no converter on record
    assert list(DATASETS) == list(Dataset)
    assert all(info.name is name for name, info in DATASETS.items())


def test_metric_breakdown_comes_from_the_registry() -> None:
    groups = metric_datasets()
    assert groups == tuple(dict.fromkeys(info.metric_group for info in DATASETS.values()))
    assert {metric_group(d) for d in Dataset} == set(groups)
    # fine-tuning's default breakdown is the registry's
    task = FinetuneTask(torch.nn.Linear(1, 1))  # type: ignore[arg-type]
    assert task.val_metrics.datasets == groups


def test_agents_of_every_dataset_get_their_own_metrics() -> None:
    """One scene per Dataset member through the helper and the metric the tasks build: each reports its group."""
    names = [d.value for d in Dataset]
    n = len(names)
    targets = EvalTargets(
        target=torch.zeros(n, 3, 2),
        valid=torch.ones(n, 3, dtype=torch.bool),
        role=torch.full((n,), 3),
        scene_index=torch.arange(n),
        dataset=names,
    )
    groups = agent_datasets(targets)
    assert groups == [metric_group(name) for name in names]
    metric = ForecastingMetrics(ks=(1,), datasets=metric_datasets())
    metric.update(torch.ones(n, 1, 3, 2), torch.ones(n, 1), targets.target, targets.valid, groups)
    values = metric.compute()
    assert {f"{metric_group(name)}/minFDE_1" for name in names} <= set(values)
    assert metric.counts() == {"all": n, **{g: groups.count(g) for g in metric_datasets()}}


def test_unregistered_dataset_names_are_refused() -> None:
    with pytest.raises(ValueError, match="'martian' is not registered"):
        dataset_info("martian")
    targets = EvalTargets(
        torch.zeros(1, 3, 2), torch.ones(1, 3, dtype=torch.bool), torch.ones(1), torch.zeros(1), ["x"]
    )
    with pytest.raises(ValueError, match="'x' is not registered"):
        agent_datasets(targets)
    assert dataset_info("av2") is dataset_info(Dataset.AV2) is DATASETS[Dataset.AV2]


def test_timeline_steps() -> None:
    for name, history, future in (("av1", 20, 30), ("av2", 50, 60), ("womd", 11, 80), ("eth_ucy", 8, 12)):
        timeline = dataset_info(name).timeline
        assert timeline is not None
        assert (timeline.num_historical_steps, timeline.num_future_steps) == (history, future)
    assert dataset_info("synthetic").timeline is None
    with pytest.raises(ValueError, match="bad timeline"):
        Timeline(dt=0.1, num_steps=10, current_step=10)
    with pytest.raises(ValueError, match="bad timeline"):
        Timeline(dt=0.0, num_steps=10, current_step=3)


def test_bad_entries_are_refused() -> None:
    with pytest.raises(ValueError, match="metric_group"):
        DatasetInfo(Dataset.AV1, "x", None, "a/b", None, None, "")
    with pytest.raises(ValueError, match="has no converter"):
        dataset_info("synthetic").converter_class()


@pytest.mark.parametrize("info", [i for i in DATASETS.values() if i.converter is not None], ids=lambda i: i.name)
def test_converter_entries(info: DatasetInfo) -> None:
    """The converter class converts this dataset and its default timeline is the registry's."""
    cls = info.converter_class()
    assert issubclass(cls, SceneConverter) and cls.dataset is info.name
    assert info.timeline is not None
    defaults = {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()}
    if "num_steps" in defaults:
        assert defaults["num_steps"] == info.timeline.num_steps
    if "current_step" in defaults:
        assert defaults["current_step"] == info.timeline.current_step


@pytest.mark.parametrize("info", [i for i in DATASETS.values() if i.config is not None], ids=lambda i: i.name)
def test_data_configs_agree_with_the_registry(info: DatasetInfo) -> None:
    cfg = _config(info.config)
    timeline = info.timeline
    assert timeline is not None and info.converter is not None
    assert cfg["name"] == info.name.value
    assert (cfg["num_steps"], cfg["current_step"]) == (timeline.num_steps, timeline.current_step)
    assert cfg["dt"] == pytest.approx(timeline.dt)
    assert cfg["num_historical_steps"] == timeline.num_historical_steps
    assert cfg["num_future_steps"] == timeline.num_future_steps
    assert cfg["converter"]["_target_"] == info.converter.replace(":", ".")


def test_every_single_dataset_config_is_registered() -> None:
    """A ``configs/data`` entry with a converter (not a mixture) belongs to a registered dataset."""
    singles = [p.stem for p in sorted(CONFIGS.glob("*.yaml")) if "converter" in _config(p.stem)]
    assert singles, f"no dataset configs found in {CONFIGS}"
    registered = {info.config for info in DATASETS.values()}
    assert set(singles) <= registered, f"configs/data entries without a registry entry: {set(singles) - registered}"
    for stem in singles:
        assert dataset_info(_config(stem)["name"]).config == stem


def test_converted_scenes_have_the_registered_timeline(tmp_path: Path) -> None:
    """End to end: what the converters produce is what the registry says (AV1 / AV2 on synthetic raw files)."""
    from smartpretrain.data.synthetic import generate_av1, generate_av2

    generate_av1(tmp_path / "av1", "val", num_scenes=1, seed=0)
    generate_av2(tmp_path / "av2", "val", num_scenes=1, seed=0)
    from smartpretrain.data.formats import eth_ucy

    slots = np.arange(20)
    eth_ucy.write_annotations(  # one pedestrian walking through one window of the ETH fold's test scene
        tmp_path / "eth_ucy" / "biwi_eth.txt",
        eth_ucy.Annotations(frame=10 * slots, ped_id=np.ones(20, np.int64), xy=np.stack([0.5 * slots, 0 * slots], 1)),
    )
    roots = {Dataset.AV1: tmp_path / "av1", Dataset.AV2: tmp_path / "av2", Dataset.ETH_UCY: tmp_path / "eth_ucy"}
    splits = {Dataset.ETH_UCY: "eth_test"}
    if WOMD_FIXTURE.exists():
        roots[Dataset.WOMD] = WOMD_FIXTURE
    assert set(roots) | {Dataset.WOMD, Dataset.SYNTHETIC} == set(Dataset)
    for name, root in roots.items():
        info = dataset_info(name)
        converter = info.converter_class()(root, splits.get(name, "val"))
        scene = converter.convert(converter.list_items()[0]).scene
        assert info.timeline is not None
        assert scene.dataset is name
        assert (scene.num_steps, scene.current_step) == (info.timeline.num_steps, info.timeline.current_step)
        assert scene.dt == pytest.approx(info.timeline.dt)
