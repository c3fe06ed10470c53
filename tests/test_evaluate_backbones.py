"""Evaluation and submission for every backbone, through the backbone-independent :class:`BatchDescription`.

Unit level: each adapter's ``collate`` attaches a description whose agent rows are exactly the rows of the
backbone's ``Forecast`` / ``EvalTargets`` (also across the worker hand-over). End to end on a tiny generated AV2
cache (3 val + 3 test scenes, model dims shrunk through Hydra overrides): ``mode=val`` gives finite metrics and
``metrics.json``; ``mode=test`` writes a submission whose scenario / track ids are the scenes' focal (or scored)
agents, in the city frame; with ``num_workers=1`` too. Guards: a bad ``mode``, an empty split, ``ckpt_path=null``
for a trained model and a split where nothing is scored each fail with one clear line (exit 2 from the CLI).
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from smartpretrain.backbones.base import BatchDescription, describe_batch
from smartpretrain.backbones.forecast_mae import ForecastMAE, ForecastMAEAdapter
from smartpretrain.backbones.qcnet.adapter import QCNetAdapter
from smartpretrain.data.cache import SceneCache
from smartpretrain.data.conversion import ConversionSettings, convert_split
from smartpretrain.data.converters.base import ConvertedScene
from smartpretrain.data.scene import Scene
from smartpretrain.data.taxonomy import AgentRole, Dataset
from smartpretrain.data.worker_transfer import pack, unpack
from smartpretrain.io.submission import read_av2_submission
from smartpretrain.runs.evaluation import METRIC_DATASETS, EvaluationError, evaluate
from smartpretrain.runs.trainer import build_backbone
from tests.conftest import REPO
from tests.helpers import TinyConverter, make_tiny_scene

CONFIGS = str(REPO / "configs")
NUM_SCENES = 3

#: Hydra overrides that keep each model tiny (a few seconds per evaluation on CPU)
TINY = {
    "qcnet_small": [
        "model.hidden_dim=8", "model.num_heads=1", "model.head_dim=8", "model.num_freq_bands=4",
        "model.num_t2m_steps=5", "model.time_span=2", "model.num_recurrent_steps=1", "model.pl2pl_radius=30",
        "model.pl2a_radius=20", "model.a2a_radius=20", "model.pl2m_radius=30", "model.a2m_radius=30",
    ],
    "forecast_mae": ["model.embed_dim=16", "model.encoder_depth=1", "model.num_heads=2"],
    "constant_velocity": [],
    "qcnet": [],  # the published configuration (slow on CPU: marked slow)
}  # fmt: skip


def _cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides)


@pytest.fixture(scope="module")
def av2_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``{root}/av2/{val,test}``: 3 synthetic AV2 scenes each (110 steps, the AV2 horizon of 60 future steps)."""
    from smartpretrain.data.converters.av2 import Av2Converter
    from smartpretrain.data.synthetic import generate_av2

    raw = tmp_path_factory.mktemp("raw")
    generate_av2(raw, "val", NUM_SCENES, seed=0)
    generate_av2(raw, "test", NUM_SCENES, seed=0, start_index=100)
    root = tmp_path_factory.mktemp("cache")
    for split in ("val", "test"):
        manifest = convert_split(Av2Converter(raw, split), root / "av2" / split, ConversionSettings(progress=False))
        assert manifest["num_scenes"] == NUM_SCENES, manifest
    return root


@pytest.fixture(scope="module")
def checkpoints(av2_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A checkpoint (``{"state_dict": {"backbone." + k: v}}``) of a freshly seeded tiny backbone per trained model."""
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {"constant_velocity": "null"}
    for model in ("qcnet_small", "forecast_mae", "qcnet"):
        torch.manual_seed(0)
        backbone = build_backbone(_cfg(["data=av2", f"model={model}", "ckpt_path=null", *TINY[model]]))
        path = folder / f"{model}.ckpt"
        torch.save({"state_dict": {f"backbone.{k}": v for k, v in backbone.state_dict().items()}}, path)
        paths[model] = str(path)
    return paths


def _overrides(model: str, cache: Path, ckpt: str, *extra: str) -> list[str]:
    return ["data=av2", f"model={model}", f"cache_root={cache}", f"ckpt_path={ckpt}", *TINY[model], *extra]


def _scenes(cache: Path, split: str) -> dict[str, Scene]:
    return {s.scenario_id: s for s in SceneCache(cache / "av2" / split)}


# ---------------------------------------------------------------------------------------------------- unit level


def _nobody_now(scene: Scene) -> Scene:
    """A copy with no agent observed at the current step (Forecast-MAE: a sample without actors)."""
    scene = copy.deepcopy(scene)
    scene.agents.valid[:, scene.current_step] = False
    return scene


def test_qcnet_collate_describes_every_agent_row() -> None:
    scenes = [make_tiny_scene("a"), make_tiny_scene("b", with_map=False, dataset=Dataset.AV2), make_tiny_scene("c")]
    adapter = QCNetAdapter(num_historical_steps=10, num_future_steps=10)
    samples = [adapter(s) for s in scenes]
    batch = adapter.collate(samples)
    d = describe_batch(batch)
    assert isinstance(d, BatchDescription)
    assert d.scenario_ids == ["a", "b", "c"] and d.datasets == ["synthetic", "av2", "synthetic"]
    assert d.origin.dtype == torch.float64 and tuple(d.origin.shape) == (3, 3)
    torch.testing.assert_close(d.origin, torch.from_numpy(np.stack([s.origin for s in scenes]).astype(np.float64)))
    # the rows are all agents of the PyG batch, in order: the rows of QCNet's Forecast / EvalTargets
    expected = [s.agents.ids[int(i)] for s, x in zip(scenes, samples, strict=True) for i in x["agent"].agent_index]
    assert d.track_ids == expected and len(expected) == batch["agent"].num_nodes
    assert torch.equal(d.agent_scene, batch["agent"].batch)
    # worker hand-over and device moves keep it
    for moved in (unpack(*pack(batch)), batch.to("cpu")):
        m = describe_batch(moved)
        assert m.track_ids == d.track_ids and m.scenario_ids == d.scenario_ids
        assert torch.equal(m.agent_scene, d.agent_scene) and torch.equal(m.origin, d.origin)


def test_forecast_mae_collate_describes_the_live_actor_rows() -> None:
    scenes = [make_tiny_scene("a"), _nobody_now(make_tiny_scene("empty")), make_tiny_scene("c", with_map=False)]
    adapter = ForecastMAEAdapter(num_historical_steps=10, num_future_steps=10)
    samples = [adapter(s) for s in scenes]
    assert len(samples[1]["track_ids"]) == 0
    assert samples[0]["track_ids"] == [scenes[0].agents.ids[int(i)] for i in samples[0]["agent_index"]]
    batch = adapter.collate(samples)
    d = describe_batch(batch)
    torch.manual_seed(0)
    model = ForecastMAE(embed_dim=16, encoder_depth=1, num_heads=2, num_historical_steps=10, num_future_steps=10)
    with torch.no_grad():
        forecast = model.eval()(batch)
    targets = model.eval_targets(batch)
    assert d.num_agents == forecast.loc.shape[0] == targets.role.shape[0] > 0
    assert torch.equal(d.agent_scene, targets.scene_index)
    live = ~batch["x_key_padding_mask"]
    rows = batch["agent_index"][live].tolist()
    assert d.track_ids == [scenes[int(b)].agents.ids[i] for b, i in zip(d.agent_scene.tolist(), rows, strict=True)]
    roles = [int(scenes[int(b)].agents.role[i]) for b, i in zip(d.agent_scene.tolist(), rows, strict=True)]
    assert roles == targets.role.tolist()
    assert 1 not in d.agent_scene.tolist()  # the scene without actors has no rows
    torch.testing.assert_close(d.origin, batch["scene_origin"])
    for moved in (unpack(*pack(batch)), batch.to("cpu")):
        m = describe_batch(moved)
        assert m.track_ids == d.track_ids and torch.equal(m.agent_scene, d.agent_scene)


def test_describe_batch_names_a_batch_without_description() -> None:
    with pytest.raises(TypeError, match="carries no BatchDescription"):
        describe_batch({"x": torch.zeros(1)})
    adapter = QCNetAdapter(num_historical_steps=10, num_future_steps=10)
    with pytest.raises(TypeError, match="HeteroData batch carries no BatchDescription"):
        describe_batch(adapter(make_tiny_scene()))  # a sample, not a collated batch
    with pytest.raises(ValueError, match="agent_scene must have shape"):
        BatchDescription(
            ["s"], ["av2"], torch.zeros(1, 3, dtype=torch.float64), ["t1", "t2"], torch.zeros(1),
            agent_index=torch.zeros(2, dtype=torch.long), agent_role=torch.zeros(2, dtype=torch.long),
            current_step=torch.zeros(1, dtype=torch.long),
        )  # fmt: skip


def test_metric_groups_are_every_dataset() -> None:
    assert set(METRIC_DATASETS) == {d.value for d in Dataset} and "eth_ucy" in METRIC_DATASETS


# ------------------------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize(
    ("model", "num_workers"),
    [("qcnet_small", 0), ("forecast_mae", 0), ("forecast_mae", 1), ("constant_velocity", 0), ("constant_velocity", 1),
     pytest.param("qcnet", 0, marks=pytest.mark.slow)],
)  # fmt: skip
def test_val_gives_finite_metrics(av2_cache: Path, checkpoints, tmp_path: Path, model: str, num_workers: int) -> None:
    cfg = _cfg(_overrides(model, av2_cache, checkpoints[model], "mode=val", f"num_workers={num_workers}"))
    summary = evaluate(cfg, tmp_path)
    metrics = summary["metrics"]
    ks = (1,) if model == "constant_velocity" else (1, 6)
    for k in ks:
        for name in ("minADE", "minFDE", "MR", "brier-minFDE"):
            assert math.isfinite(metrics[f"{name}_{k}"]) and math.isfinite(metrics[f"av2/{name}_{k}"])
            assert metrics[f"av2/{name}_{k}"] == pytest.approx(metrics[f"{name}_{k}"])
    assert summary["num_agents"] == NUM_SCENES  # one focal agent per scene
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"] == metrics


def _check_city_frame(scenes: dict[str, Scene], submission: dict) -> None:
    """Every track's first predicted step lies near its current city position (the scenes sit kilometres off 0)."""
    for scenario_id, tracks in submission.items():
        scene = scenes[scenario_id]
        for track_id, (trajectories, probabilities) in tracks.items():
            agent = list(scene.agents.ids).index(track_id)
            now = scene.agents.position[agent, scene.current_step, :2].astype(np.float64) + scene.origin[:2]
            assert float(np.linalg.norm(trajectories[:, 0] - now, axis=-1).max()) < 5.0, (scenario_id, track_id)
            assert abs(float(probabilities.sum()) - 1.0) < 1e-6


@pytest.mark.parametrize(
    ("model", "num_workers"),
    [("qcnet_small", 1), ("forecast_mae", 0), ("forecast_mae", 1), ("constant_velocity", 0), ("constant_velocity", 1),
     pytest.param("qcnet", 1, marks=pytest.mark.slow)],
)  # fmt: skip
def test_test_writes_the_focal_agents_submission(
    av2_cache: Path, checkpoints, tmp_path: Path, model: str, num_workers: int
) -> None:
    cfg = _cfg(_overrides(model, av2_cache, checkpoints[model], "mode=test", f"num_workers={num_workers}"))
    summary = evaluate(cfg, tmp_path)
    submission = read_av2_submission(summary["submission"])
    scenes = _scenes(av2_cache, "test")
    expected = {sid: {s.agents.ids[s.focal_index]} for sid, s in scenes.items()}
    assert {sid: set(tracks) for sid, tracks in submission.items()} == expected
    k = 1 if model == "constant_velocity" else 6
    assert all(traj.shape == (k, 60, 2) for tracks in submission.values() for traj, _ in tracks.values())
    _check_city_frame(scenes, submission)
    assert json.loads((tmp_path / "metrics.json").read_text())["submission"] == summary["submission"]


def test_scored_scope_submits_every_scored_track(av2_cache: Path, tmp_path: Path) -> None:
    """One mode (probability 1 for every track): several tracks per scenario, all at the right rows."""
    cfg = _cfg(_overrides("constant_velocity", av2_cache, "null", "mode=test", "eval_scope=scored", "num_workers=1"))
    submission = read_av2_submission(evaluate(cfg, tmp_path)["submission"])
    scenes = _scenes(av2_cache, "test")
    scored = (int(AgentRole.FOCAL), int(AgentRole.SCORED))
    expected = {
        sid: {s.agents.ids[i] for i in range(len(s.agents.ids)) if int(s.agents.role[i]) in scored}
        for sid, s in scenes.items()
    }
    assert sum(len(v) for v in expected.values()) > NUM_SCENES  # more than the focal tracks
    assert {sid: set(tracks) for sid, tracks in submission.items()} == expected
    _check_city_frame(scenes, submission)


# ---------------------------------------------------------------------------------------------------------- guards


def _run_cli(args: list[str], run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "smartpretrain.evaluate", *args, f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["mode=tset"], "mode='tset' is not one of val, test"),
        (["model=qcnet_small"], "ckpt_path=null: QCNet has .* trainable parameters"),
    ],
)
def test_cli_guards_exit_2_with_one_line(av2_cache: Path, tmp_path: Path, args: list[str], message: str) -> None:
    import re

    result = _run_cli(["data=av2", f"cache_root={av2_cache}", "ckpt_path=null", *args], tmp_path / "run")
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith("smartpretrain.evaluate: error: ") and re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.parametrize("model", ["qcnet_small", "forecast_mae"])
def test_trained_model_without_checkpoint_is_refused(av2_cache: Path, tmp_path: Path, model: str) -> None:
    cfg = _cfg(_overrides(model, av2_cache, "null", "mode=val"))
    with pytest.raises(EvaluationError, match=r"ckpt_path=null: .* trainable parameters .* random weights"):
        evaluate(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before any work


def test_missing_checkpoint_option_is_refused(av2_cache: Path, tmp_path: Path) -> None:
    cfg = _cfg(["data=av2", "model=forecast_mae", f"cache_root={av2_cache}", "mode=test"])  # ckpt_path: ???
    with pytest.raises(EvaluationError, match="ckpt_path is not set"):
        evaluate(cfg, tmp_path / "out")


def test_empty_split_is_an_error_not_nan(av2_cache: Path, tmp_path: Path) -> None:
    convert_split(TinyConverter(2, drop=(0, 1)), tmp_path / "cache" / "av2" / "val", ConversionSettings(progress=False))
    cfg = _cfg(_overrides("constant_velocity", tmp_path / "cache", "null", "mode=val"))
    with pytest.raises(EvaluationError, match=r"split 'val' of av2 \(.*\) has no scenes"):
        evaluate(cfg, tmp_path / "out")
    for limit in (0, -1):
        cfg = _cfg(_overrides("constant_velocity", av2_cache, "null", "mode=val", f"limit_scenes={limit}"))
        with pytest.raises(EvaluationError, match=f"limit_scenes={limit} selects no scene of split 'val'"):
            evaluate(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


class _NoFutureConverter(TinyConverter):
    """Tiny scenes whose focal agent is not observed after the current step: nothing to score."""

    def convert(self, item: str) -> ConvertedScene:
        converted = super().convert(item)
        scene = converted.scene
        scene.agents.valid[scene.focal_index, scene.current_step + 1 :] = False
        scene.agents.position[scene.focal_index, scene.current_step + 1 :] = 0.0
        return converted


def test_nothing_scored_is_an_error_naming_split_and_scope(tmp_path: Path) -> None:
    convert_split(_NoFutureConverter(2), tmp_path / "cache" / "av2" / "val", ConversionSettings(progress=False))
    steps = ["data.num_historical_steps=10", "data.num_future_steps=10"]
    cfg = _cfg(_overrides("constant_velocity", tmp_path / "cache", "null", "mode=val", "num_workers=0", *steps))
    with pytest.raises(EvaluationError, match=r"no agent was scored on split 'val' .* eval_scope='focal'"):
        evaluate(cfg, tmp_path / "out")
    assert not (tmp_path / "out" / "metrics.json").exists()
