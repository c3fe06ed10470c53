"""End to end: fine-tune QCNet on the real AV2 fixture (overfit), evaluate through val.sh from a checkpoint
served on 127.0.0.1, and write + read back an AV2 submission through test.sh."""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from smartpretrain.data.conversion import ConversionSettings, convert_split
from smartpretrain.data.converters.av2 import Av2Converter
from smartpretrain.data.datamodule import SceneDataModule
from smartpretrain.runs.evaluation import evaluate
from smartpretrain.runs.trainer import build_backbone
from smartpretrain.tasks.finetune import FinetuneTask
from tests.conftest import AV2_FIXTURE_ROOT, REPO

CONFIGS = str(REPO / "configs")


@pytest.fixture(scope="module")
def fixture_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not AV2_FIXTURE_ROOT.exists():
        pytest.skip(f"real data not available: {AV2_FIXTURE_ROOT}")
    root = tmp_path_factory.mktemp("cache")
    for split in ("train", "val"):
        convert_split(Av2Converter(AV2_FIXTURE_ROOT, "val"), root / "av2" / split, ConversionSettings(progress=False))
    return root


def _cfg(config: str, overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name=config, overrides=overrides)


@pytest.fixture(scope="module")
def overfit(fixture_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[FinetuneTask, dict, Path]:
    """Train the small QCNet on the one fixture scene; returns the task, the losses and a saved checkpoint."""
    torch.manual_seed(0)
    cfg = _cfg("train", ["data=av2", "model=qcnet_small", f"cache_root={fixture_cache}"])
    backbone = build_backbone(cfg)
    adapter = backbone.make_adapter()
    dm = SceneDataModule(train=fixture_cache / "av2" / "train", batch_size=1, collate_fn=adapter.collate,
                         train_transform=adapter, eval_transform=adapter)  # fmt: skip
    dm.setup("fit")
    (batch,) = list(dm.train_dataloader())
    task = FinetuneTask(backbone, lr=3e-3, weight_decay=0.0, max_epochs=1)
    optimizer = torch.optim.AdamW(task.parameters(), lr=3e-3)
    losses = []
    task.train()
    for _ in range(150):
        optimizer.zero_grad()
        loss = backbone.loss(batch, backbone(batch))["loss"]
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in backbone.state_dict().items()}}, path)
    return task, {"first": losses[0], "last": min(losses[-10:])}, path


@pytest.mark.slow
def test_overfit_fixture_scene(overfit, fixture_cache: Path, tmp_path: Path) -> None:
    _, losses, ckpt = overfit
    assert losses["last"] < losses["first"] - 5.0, losses
    cfg = _cfg("evaluate", ["data=av2", "model=qcnet_small", f"cache_root={fixture_cache}", f"ckpt_path={ckpt}",
                            "mode=val", "num_workers=0", "num_plots=1"])  # fmt: skip
    summary = evaluate(cfg, tmp_path)
    assert summary["metrics"]["minFDE_6"] < 0.5, summary
    assert summary["metrics"]["av2/minFDE_6"] == pytest.approx(summary["metrics"]["minFDE_6"])
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"]["minFDE_6"] < 0.5
    assert len(list((tmp_path / "plots").glob("*.png"))) == 1


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.mark.slow
def test_val_and_test_scripts_with_served_checkpoint(overfit, fixture_cache: Path, tmp_path: Path) -> None:
    from av2.datasets.motion_forecasting.eval.submission import ChallengeSubmission

    _, _, ckpt = overfit
    handler = functools.partial(_Quiet, directory=str(ckpt.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{ckpt.name}"
        common = ["data=av2", "model=qcnet_small", f"cache_root={fixture_cache}", f"ckpt_path={url}", "num_workers=0"]
        env = {"SMARTPRETRAIN_CACHE": str(tmp_path / "dl"), "PATH": "/usr/bin:/bin"}
        val = subprocess.run(["bash", str(REPO / "val.sh"), *common, f"hydra.run.dir={tmp_path / 'val'}"],
                             capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
        assert val.returncode == 0, val.stderr[-3000:]
        assert "minFDE_6" in val.stdout
        metrics = json.loads((tmp_path / "val" / "metrics.json").read_text())["metrics"]
        assert metrics["minFDE_6"] < 0.5
        test_args = [*common, "split=val", f"hydra.run.dir={tmp_path / 'test'}"]
        test = subprocess.run(
            ["bash", str(REPO / "test.sh"), *test_args], capture_output=True, text=True, timeout=300, env=env
        )
        assert test.returncode == 0, test.stderr[-3000:]
    finally:
        server.shutdown()
    submission = ChallengeSubmission.from_parquet(tmp_path / "test" / "submission.parquet")
    # av2 0.3.x: scenario_id -> (probabilities [K], {track_id: trajectories [K, 60, 2]})
    ((scenario_id, (probabilities, tracks)),) = submission.predictions.items()
    ((track_id, trajectories),) = tracks.items()
    assert scenario_id == "0a1e6f0a-1817-4a98-b02e-db8c9327d151"
    assert track_id == "138951" and trajectories.shape == (6, 60, 2)
    assert abs(float(probabilities.sum()) - 1.0) < 1e-6
    # global (city) frame: every mode starts within a few metres of the focal agent's current city position
    origin = Av2Converter(AV2_FIXTURE_ROOT, "val").convert(scenario_id).scene.origin[:2]
    assert float(np.linalg.norm(trajectories[:, 0] - origin, axis=-1).max()) < 5.0


def test_constant_velocity_baseline_matches_hand_computation(fixture_cache: Path, tmp_path: Path) -> None:
    cfg = _cfg("evaluate", ["data=av2", "model=constant_velocity", f"cache_root={fixture_cache}", "ckpt_path=null",
                            "mode=val", "num_workers=0"])  # fmt: skip
    metrics = evaluate(cfg, tmp_path)["metrics"]
    assert "minFDE_6" not in metrics  # one mode: scored at K = 1 only
    scene = Av2Converter(AV2_FIXTURE_ROOT, "val").convert("0a1e6f0a-1817-4a98-b02e-db8c9327d151").scene
    pos = scene.agents.position[scene.focal_index, :, :2].astype(np.float64)
    velocity = (pos[49] - pos[44]) / 0.5  # window = 5 steps, all observed for the focal agent
    predicted = pos[49] + velocity[None] * (np.arange(1, 61)[:, None] * 0.1)
    errors = np.linalg.norm(predicted - pos[50:110], axis=-1)
    assert metrics["minFDE_1"] == pytest.approx(errors[-1], abs=1e-3)
    assert metrics["minADE_1"] == pytest.approx(errors.mean(), abs=1e-3)
