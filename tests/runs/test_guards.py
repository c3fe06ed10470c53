"""Misuse is refused before any work, with one clear line: wrong dataset for a cache, out-of-range options,
mistyped monitor, a weights file that matches nothing; and a checkpoint that would run code is refused through
every option that takes one (``resume=``, ``ckpt_path=``, ``pretrained_ckpt=``) without running it."""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from smartpretrain.config import compose_config
from smartpretrain.io.checkpoints import CheckpointError
from smartpretrain.runs.guards import RunConfigError
from tests.conftest import REPO
from tests.runs.test_exact_resume import QUIET

FINETUNE = ["model=qcnet_small", "data=av1", "max_epochs=1", "batch_size=4", "num_workers=0", *QUIET]
PRETRAIN = ["experiment=smartpretrain_cpu_small", "data=av1", "max_epochs=1", "batch_size=4", "num_workers=0", *QUIET]


def _finetune(cache: Path, out: Path, *extra: str) -> dict:
    from smartpretrain.runs.finetuning import run

    return run(compose_config("train", [*FINETUNE, f"cache_root={cache}", *extra]), out)


def _pretrain(cache: Path, out: Path, *extra: str) -> dict:
    from smartpretrain.runs.pretraining import run

    return run(compose_config("pretrain", [*PRETRAIN, f"cache_root={cache}", *extra]), out)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train_fraction=1.5", r"train_fraction must be > 0.0 and <= 1.0, got 1.5"),
        ("train_fraction=0", r"train_fraction must be > 0.0"),
        ("batch_size=0", r"batch_size must be >= 1"),
        ("num_workers=-1", r"num_workers must be >= 0"),
        ("monitor=val_minFDE6", r"monitor='val_minFDE6' is not logged by this task; choose one of: val_loss, "),
        ("eval_scope=all", r"eval_scope='all' is not one of: focal, scored"),
        ("batching.max_agents_per_batch=0", r"batching.max_agents_per_batch must be >= 1"),
        ("checkpoint.every_n_train_steps=0", r"checkpoint.every_n_train_steps must be >= 1"),
    ],
)
def test_bad_finetune_options_are_refused_before_any_work(av1_cache: Path, tmp_path: Path, override: str,
                                                           message: str) -> None:  # fmt: skip
    out = tmp_path / "run"
    with pytest.raises(RunConfigError, match=message):
        _finetune(av1_cache, out, override)
    assert not out.exists()  # nothing written: not even the run folder


def test_bad_pretrain_monitor_is_refused(av1_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(RunConfigError, match=r"monitor='val_los' is not logged .* val_loss, val_tcl, val_trl"):
        _pretrain(av1_cache, tmp_path / "run", "monitor=val_los")
    assert not (tmp_path / "run").exists()


@pytest.fixture
def av1_cache_named_av2(av1_cache: Path, tmp_path: Path) -> Path:
    """The AV1 cache copied where data=av2 looks for its splits."""
    root = tmp_path / "cache"
    for split in ("train", "val"):
        shutil.copytree(av1_cache / "av1" / split, root / "av2" / split)
    return root


def test_wrong_dataset_for_the_cache_is_refused(av1_cache_named_av2: Path, tmp_path: Path) -> None:
    from smartpretrain.runs.finetuning import run

    cfg = compose_config("train", [*FINETUNE, "data=av2", f"cache_root={av1_cache_named_av2}"])
    with pytest.raises(RunConfigError, match=r"av2/train holds av1 scenes but data says av2; pass data=av1"):
        run(cfg, tmp_path / "run")
    from smartpretrain.runs.pretraining import run as pretrain

    cfg = compose_config("pretrain", [*PRETRAIN, "data=av2", f"cache_root={av1_cache_named_av2}"])
    with pytest.raises(RunConfigError, match=r"holds av1 scenes but data says av2"):
        pretrain(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_views_longer_than_the_scenes_are_refused(av1_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(RunConfigError, match=r"scenes have 50 steps, fewer than the 60 .* lower data.view_window"):
        _pretrain(av1_cache, tmp_path / "run", "data.view_window=30")


def test_empty_split_is_refused(av1_cache: Path, tmp_path: Path) -> None:
    from smartpretrain.data.conversion import ConversionSettings, convert_split
    from smartpretrain.data.converters.av1 import Av1Converter
    from smartpretrain.data.synthetic import generate_av1

    raw = tmp_path / "raw"
    generate_av1(raw, "val", 1, seed=0)
    (next((raw / "val" / "data").glob("*.csv"))).write_text("not,a,csv\n")  # the only scene is dropped
    root = tmp_path / "cache"
    shutil.copytree(av1_cache / "av1" / "train", root / "av1" / "train")
    convert_split(Av1Converter(raw, "val", num_steps=50, current_step=19), root / "av1" / "val",
                  ConversionSettings(progress=False))  # fmt: skip
    with pytest.raises(RunConfigError, match=r"av1/val: the split has no scenes"):
        _finetune(root, tmp_path / "run")


def test_weights_that_match_nothing_are_refused_even_without_strict_load(av1_cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"backbone.something.else": torch.zeros(3)}}, path)
    with pytest.raises(RunConfigError, match=r"not one tensor matches QCNet .* wrong model= or wrong file"):
        _finetune(av1_cache, tmp_path / "run", f"ckpt_path={path}", "strict_load=false")


def test_cli_error_is_one_line_and_exit_2(av1_cache: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "smartpretrain.finetune", *FINETUNE, f"cache_root={av1_cache}",
           "train_fraction=1.5", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["smartpretrain.finetune: error: train_fraction must be > 0.0 and <= 1.0, got 1.5"]


def test_cpu_trainer_has_a_strategy_key() -> None:
    cfg = compose_config("train", ["trainer=cpu", "trainer.strategy=ddp"])
    assert cfg.trainer.strategy == "ddp"


# --------------------------------------------------------------------------------------------------------------
# A checkpoint that would execute code, through every option that takes a checkpoint
# --------------------------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this calls ``Path.touch(marker)``: the side effect a crafted checkpoint would have."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def evil_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "served"
    served.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {"backbone.x": torch.zeros(1)}, "epoch": 0, "evil": _Payload(marker)},
               served / "evil.ckpt")  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/evil.ckpt", marker
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("entry", "option"),
    [("finetune", "resume"), ("finetune", "ckpt_path"), ("finetune", "pretrained_ckpt"), ("pretrain", "resume")],
)
def test_malicious_checkpoint_is_refused_and_runs_nothing(
    av1_cache: Path, tmp_path: Path, evil_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch,
    entry: str, option: str,
) -> None:  # fmt: skip
    url, marker = evil_server
    monkeypatch.setenv("SMARTPRETRAIN_CACHE", str(tmp_path / "ckpt-cache"))
    run = _finetune if entry == "finetune" else _pretrain
    with pytest.raises(CheckpointError) as info:
        run(av1_cache, tmp_path / "run", f"{option}={url}")
    message = str(info.value)
    assert "the global builtins.getattr" in message, message  # how pickle reaches Path.touch
    assert "weights_only=False" not in message and "\n" not in message
    assert not marker.exists(), "the payload ran"
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before training started


def test_evaluating_a_cache_of_another_dataset_is_refused(av1_cache: Path, tmp_path: Path) -> None:
    from smartpretrain.runs.evaluation import evaluate

    root = tmp_path / "cache"
    shutil.copytree(av1_cache / "av1" / "val", root / "womd" / "val")
    cfg = compose_config("evaluate", ["data=womd", "model=constant_velocity", f"cache_root={root}", "ckpt_path=null"])
    with pytest.raises(RunConfigError, match=r"womd/val holds av1 scenes but data says womd; pass data=av1"):
        evaluate(cfg, tmp_path / "eval")
    assert not (tmp_path / "eval").exists()
