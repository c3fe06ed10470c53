"""Checks that run before any long work: options in range, and caches that are what ``data=`` says they are.

Every failure is a :class:`RunConfigError` whose message is one line naming the option or file and what is
wrong; the entry points print it and exit with status 2 (no traceback), before weights are downloaded, models
built or workers started.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from smartpretrain.data.cache import INDEX_NAME, MANIFEST_NAME, SCHEMA_VERSION
from smartpretrain.data.taxonomy import Dataset
from smartpretrain.metrics.forecasting import METRIC_NAMES

__all__ = [
    "RunConfigError",
    "check_batching_and_checkpoints",
    "check_cache_matches",
    "check_choice",
    "check_monitor",
    "check_range",
    "expected_dataset",
    "finetune_monitors",
    "pretrain_monitors",
    "read_manifest",
]


class RunConfigError(ValueError):
    """A bad option or input, found before the run starts."""


def check_range(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, allow_none: bool = False, integer: bool = False) -> None:  # fmt: skip
    """``value`` of option ``name`` is a number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if value is None:
        if allow_none:
            return
        raise RunConfigError(f"{name} must be set (got null)")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RunConfigError(f"{name} must be a number, got {value!r}")
    if integer and int(value) != value:
        raise RunConfigError(f"{name} must be an integer, got {value!r}")
    parts = []
    if low is not None:
        parts.append(f"> {low}" if low_open else f">= {low}")
    if high is not None:
        parts.append(f"<= {high}")
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        raise RunConfigError(f"{name} must be {' and '.join(parts)}, got {value!r}")


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise RunConfigError(f"{name}={value!r} is not one of: {', '.join(allowed)}")


def finetune_monitors(ks: Sequence[int] = (1, 6)) -> list[str]:
    """What the fine-tuning task logs and a checkpoint may monitor."""
    metrics = [f"val_{name}_{k}" for k in ks for name in METRIC_NAMES]
    return ["val_loss", *metrics, "train_loss"]


def pretrain_monitors(objectives: Iterable[str]) -> list[str]:
    names = list(objectives)
    return ["val_loss", *[f"val_{n}" for n in names], "train_loss", *[f"train_{n}" for n in names]]


def check_monitor(value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise RunConfigError(f"monitor={value!r} is not logged by this task; choose one of: {', '.join(allowed)}")


def read_manifest(split_dir: Path) -> dict[str, Any]:
    """The manifest of a converted split, or a RunConfigError naming the folder."""
    split_dir = Path(split_dir)
    if not (split_dir / INDEX_NAME).exists():
        raise RunConfigError(
            f"{split_dir}: not a converted cache split (no {INDEX_NAME}); convert it with "
            "`python -m smartpretrain.convert data=... data.split=...` or check cache_root / data="
        )
    path = split_dir / MANIFEST_NAME
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunConfigError(f"{path}: unreadable manifest ({exc})") from exc


def _steps(manifest: dict[str, Any], key: str) -> tuple[int, int] | None:
    value = manifest.get(key)
    if isinstance(value, dict) and "min" in value and "max" in value:
        return int(value["min"]), int(value["max"])
    if isinstance(value, int):
        return value, value
    return None


def check_cache_matches(
    split_dir: Path,
    dataset: str | None,
    *,
    history_steps: int | None = None,
    future_steps: int | None = None,
    min_steps: int | None = None,
    what: str = "data",
) -> dict[str, Any]:
    """Refuse a split whose manifest contradicts the run's config; returns the manifest.

    Args:
        split_dir: ``{cache_root}/{dataset}/{split}``.
        dataset: the dataset the config names (``data.name``, or a mixture component's dataset); None skips the
            check (e.g. a mixture component named freely).
        history_steps / future_steps: the model's window around the present; every scene must have that many
            steps up to and after its current step (a future of 0 steps is allowed: test splits).
        min_steps: every scene has at least this many steps (SSL: two views).
        what: the option to name in messages.
    """
    manifest = read_manifest(split_dir)
    if not manifest:
        return manifest
    version = manifest.get("schema_version")
    if version is not None and version != SCHEMA_VERSION:
        raise RunConfigError(
            f"{split_dir}: cache schema version {version}, this code reads {SCHEMA_VERSION}; re-convert it"
        )
    have = manifest.get("dataset")
    # hand-made synthetic scenes (tests, demos) stand in for any dataset; converted real data must match
    if dataset is not None and have not in (None, Dataset.SYNTHETIC.value) and have != dataset:
        raise RunConfigError(
            f"{split_dir} holds {have} scenes but {what} says {dataset}; pass data={have} or point cache_root "
            "at the right cache"
        )
    if manifest.get("num_scenes") == 0:
        raise RunConfigError(f"{split_dir}: the split has no scenes (see its manifest.json for dropped scenes)")
    steps, current = _steps(manifest, "num_steps"), _steps(manifest, "current_step")
    if steps is not None and current is not None:
        (min_total, _), (min_current, max_current) = steps, current
        if history_steps is not None and min_current + 1 < history_steps:
            raise RunConfigError(
                f"{split_dir}: scenes have {min_current + 1} history steps, the model needs {history_steps} "
                f"({what}.num_historical_steps); is this the right dataset?"
            )
        future_have = min_total - max_current - 1
        if future_steps is not None and 0 < future_have < future_steps:
            raise RunConfigError(
                f"{split_dir}: scenes have {future_have} future steps, the model predicts {future_steps} "
                f"({what}.num_future_steps); is this the right dataset?"
            )
    if steps is not None and min_steps is not None and steps[0] < min_steps:
        raise RunConfigError(
            f"{split_dir}: scenes have {steps[0]} steps, fewer than the {min_steps} that two views of "
            f"{min_steps // 2} need; lower {what}.view_window"
        )
    return manifest


def check_batching_and_checkpoints(cfg: DictConfig) -> None:
    """``batching.*`` budgets and ``checkpoint.*`` intervals are positive or null; ``save_top_k`` is >= -1 (-1:
    keep every epoch's checkpoint)."""
    batching = cfg.get("batching") or {}
    for key in ("max_agents_per_batch", "max_agents_per_scene"):
        check_range(f"batching.{key}", batching.get(key), 1, allow_none=True, integer=True)
    check_range("save_top_k", cfg.get("save_top_k"), -1, integer=True)
    checkpoint = cfg.get("checkpoint") or {}
    check_range("checkpoint.every_n_train_steps", checkpoint.get("every_n_train_steps"), 1, allow_none=True,
                integer=True)  # fmt: skip
    check_range("checkpoint.every_n_minutes", checkpoint.get("every_n_minutes"), 0.0, low_open=True,
                allow_none=True)  # fmt: skip


def expected_dataset(cfg: DictConfig, source_name: str) -> str | None:
    """The dataset a run's source must hold: ``data.name`` for a single dataset; for a mixture component, the
    ``dataset:`` it declares, else its name when that names a dataset (None: not checked)."""
    if cfg.data.get("components") is None:
        return str(cfg.data.name)
    component = cfg.data.components[source_name]
    declared = component.get("dataset") if component is not None else None
    if declared:
        return str(declared)
    return source_name if source_name in {d.value for d in Dataset} else None
