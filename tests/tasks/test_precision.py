"""bf16 autocast stops where the tasks say (:mod:`smartpretrain.tasks.precision`), checked under CPU autocast.

* :func:`upcast` / :func:`float32_region` on their own;
* pre-training: under ``torch.autocast("cpu", bfloat16)`` (what ``trainer.precision=bf16-mixed`` runs a step in)
  every loss is float32, and the objectives' losses equal those recomputed without autocast, in float32, from the
  same backbone embeddings upcast: the projectors and objectives ran in float32 (in bfloat16 they differ by ~1e-3);
* fine-tuning: the training step's loss is float32 and equals the backbone's loss recomputed in float32 from the
  same forecast upcast;
* Forecast-MAE (fine-tuning, TCL + TRL, its own MAE) runs under bf16 autocast at all (it used to fail on an
  indexed write of bfloat16 tokens into float32 buffers).
"""

from __future__ import annotations

import math
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from torch import Tensor

from smartpretrain.backbones.base import AgentEmbeddings, Forecast
from smartpretrain.config import compose_config
from smartpretrain.data.sources import RunSources
from smartpretrain.runs.finetuning import _datamodule
from smartpretrain.runs.pretraining import build_datamodule, build_task
from smartpretrain.tasks.finetune import FinetuneTask
from smartpretrain.tasks.precision import float32_region, upcast

BF16 = torch.bfloat16
TINY_FMAE = ["model.embed_dim=32", "model.encoder_depth=1", "model.num_heads=2"]
TOL = {"atol": 1e-6, "rtol": 1e-6}


def _autocast() -> torch.autocast:
    return torch.autocast("cpu", dtype=BF16)


# --- the helpers -----------------------------------------------------------------------------------------------
class _DictBatch(dict):
    """A dict subclass, as Forecast-MAE's batch."""


def test_upcast_turns_half_tensors_to_float32_in_nested_structures() -> None:
    pair = namedtuple("pair", "a b")
    half, ints, double = torch.ones(2, dtype=BF16), torch.arange(3), torch.ones(2, dtype=torch.float64)
    forecast = Forecast(loc=half, pi=half.half(), extras={"scale": half, "ids": ints})
    out = upcast({"forecast": forecast, "list": [half, (half, ints)], "pair": pair(half, double), "name": "x"})
    assert isinstance(out["forecast"], Forecast)
    assert out["forecast"].loc.dtype == out["forecast"].pi.dtype == out["forecast"].extras["scale"].dtype
    assert out["forecast"].loc.dtype == torch.float32
    assert out["forecast"].extras["ids"] is ints  # integer tensors are not touched
    assert out["list"][0].dtype == torch.float32 and out["list"][1][0].dtype == torch.float32
    assert isinstance(out["pair"], pair) and out["pair"].b is double and out["name"] == "x"
    batch = upcast(_DictBatch(x=half, n=ints))
    assert type(batch) is _DictBatch and batch["x"].dtype == torch.float32 and batch["n"] is ints
    same = torch.ones(2)
    assert upcast(same) is same  # float32 comes back as it is


def test_float32_region_switches_autocast_off_and_upcasts_only_under_autocast() -> None:
    a, b = torch.randn(4, 3), torch.randn(3, 2)
    half = torch.ones(2, dtype=BF16)
    with _autocast():
        assert (a @ b).dtype == BF16
        with float32_region(a.device) as to_float32:
            assert (a @ b).dtype == torch.float32
            assert to_float32(half).dtype == torch.float32
        assert (a @ b).dtype == BF16
    with float32_region("cpu") as to_float32:  # no autocast (32-true, bf16-true): nothing to change
        assert to_float32(half) is half


# --- pre-training ----------------------------------------------------------------------------------------------
def _ssl_setup(cache: Path, overrides: list[str]) -> tuple[Any, Any]:
    cfg = compose_config("pretrain", ["data=av1", f"cache_root={cache}", "batch_size=4", "num_workers=0", *overrides])
    torch.manual_seed(0)
    task = build_task(cfg).train()
    datamodule = build_datamodule(cfg, task.backbone, with_full=task.needs.full_scene,
                                  with_controls=task.needs.controls)  # fmt: skip
    datamodule.setup("fit")
    return task, next(iter(datamodule.train_dataloader()))


def _on_branch_outputs(task: Any, hook: Callable[[Any, Any, AgentEmbeddings], Any]) -> list[Any]:
    """``hook`` on the output of every branch's encoding (``SSLBranch.forward``: the backbone's embeddings)."""
    return [branch.register_forward_hook(hook) for branch in (task.branch, task.momentum_branch)]


@pytest.mark.parametrize(
    "overrides",
    [["experiment=smartpretrain_cpu_small"], ["experiment=control_cpu_small"],
     ["experiment=smartpretrain_forecast_mae_cpu_small", *TINY_FMAE]],
    ids=["qcnet_tcl_trl", "qcnet_control", "fmae_tcl_trl"],
)  # fmt: skip
def test_ssl_losses_under_bf16_autocast_are_float32_computations(av1_cache: Path, overrides: list[str]) -> None:
    task, batch = _ssl_setup(av1_cache, overrides)
    captured: list[AgentEmbeddings] = []

    def capture(module: Any, args: Any, output: AgentEmbeddings) -> None:
        captured.append(output)

    handles = _on_branch_outputs(task, capture)
    torch.manual_seed(1)
    with _autocast():
        mixed = task.losses(batch)
    for handle in handles:
        handle.remove()
    assert captured  # (QCNet's embeddings leave a LayerNorm, float32 under autocast; Forecast-MAE's are bfloat16)
    assert all(value.dtype == torch.float32 for value in mixed.values()), {k: v.dtype for k, v in mixed.items()}

    replay = iter(captured)  # the same embeddings, upcast, into a float32 run of everything after the backbone
    handles = _on_branch_outputs(task, lambda module, args, output: upcast(next(replay)))
    torch.manual_seed(1)
    reference = task.losses(batch)
    for handle in handles:
        handle.remove()
    assert next(replay, None) is None
    assert set(mixed) == set(reference) and float(mixed["num_queries"]) > 0
    for name in mixed:
        torch.testing.assert_close(mixed[name], reference[name], **TOL, msg=name)


@pytest.mark.parametrize(
    "objectives",
    [
        ["ssl.objectives.tcl.weight=1", "ssl.objectives.trl.weight=1"],
        ["ssl.objectives.mae.weight=1", "ssl.objectives.tcl.weight=0", "ssl.objectives.trl.weight=0"],
    ],
    ids=["tcl_trl", "mae"],
)
def test_forecast_mae_pretrains_under_bf16_autocast(av1_cache: Path, objectives: list[str]) -> None:
    task, batch = _ssl_setup(av1_cache, ["experiment=smartpretrain_forecast_mae_cpu_small", *TINY_FMAE, *objectives])
    with _autocast():
        out = task.losses(batch)
    out["loss"].backward()
    assert all(value.dtype == torch.float32 for value in out.values())
    assert math.isfinite(float(out["loss"]))
    encoder = task.backbone.blocks.parameters()  # the part every objective trains
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in encoder)


# --- fine-tuning -----------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("model", [["model=qcnet_small"], ["model=forecast_mae", *TINY_FMAE]], ids=["qcnet", "fmae"])
def test_finetune_step_under_bf16_autocast_has_a_float32_loss(av1_cache: Path, model: list[str]) -> None:
    cfg = compose_config("train", [*model, "data=av1", f"cache_root={av1_cache}", "batch_size=2", "num_workers=0"])
    torch.manual_seed(0)
    backbone = instantiate(cfg.model)
    datamodule = _datamodule(cfg, backbone, RunSources.of(cfg))
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    task = FinetuneTask(backbone).train()
    forecasts: list[Forecast] = []
    handle = backbone.register_forward_hook(lambda module, args, output: forecasts.append(output))
    with _autocast():
        loss: Tensor = task.training_step(batch, 0)
    handle.remove()
    loss.backward()
    (forecast,) = forecasts
    dtypes = {forecast.loc.dtype, forecast.pi.dtype, *(t.dtype for t in forecast.extras.values())}
    assert BF16 in dtypes  # the backbone ran in bfloat16 ...
    assert loss.dtype == torch.float32  # ... its loss did not
    reference = backbone.loss(batch, upcast(forecast))["loss"]
    torch.testing.assert_close(loss.detach(), reference.detach(), **TOL)
