"""Converting a raw dataset split into the scene cache from a composed ``configs/convert.yaml``
(``python -m smartpretrain.convert``, the demo).

:func:`run` checks every option before any work, converts through
:func:`~smartpretrain.data.conversion.convert_split` (resumable, shardable) and records the configuration of the
last run that changed the split beside it (``convert_config.yaml``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from smartpretrain.data.cache import CacheError
from smartpretrain.data.conversion import ConversionSettings, StrictModeError, convert_split, summary_line
from smartpretrain.io.atomic import atomic_write_text

__all__ = ["CONFIG_NAME", "EXPECTED_ERRORS", "run", "shard_spec"]

#: the run configuration written beside a converted split
CONFIG_NAME = "convert_config.yaml"

#: failures that end ``python -m smartpretrain.convert`` with one line and exit status 2: bad input under
#: ``strict=true``, a cache of another schema, a wrong path or option, a full disk or read-only storage, a shard
#: locked by another process; parts already written stay on disk and a re-run resumes from them
EXPECTED_ERRORS: tuple[type[Exception], ...] = (StrictModeError, CacheError, OSError, ValueError)

log = logging.getLogger(__name__)


def _as_int(cfg: DictConfig, name: str) -> int:
    value = cfg.get(name)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def shard_spec(shard: Any, num_shards: Any) -> str:
    """``shard`` as ``"i/n"``: given so, or as an integer ``i`` with ``num_shards=n`` (what a multirun sweep such as
    ``shard='range(16)' num_shards=16`` gives each job)."""
    if num_shards is None:
        if isinstance(shard, int) and not isinstance(shard, bool):
            raise ValueError(f"shard={shard}: give num_shards=<n> too (or shard={shard}/<n>)")
        return str(shard)
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive integer, got {num_shards!r}")
    if isinstance(shard, bool) or not isinstance(shard, int):
        if str(shard).split("/")[-1] == str(num_shards):
            return str(shard)
        raise ValueError(f"shard={shard!r} with num_shards={num_shards}: give shard as an integer 0..{num_shards - 1}")
    return f"{shard}/{num_shards}"


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one conversion from a composed config; returns the manifest."""
    settings = ConversionSettings(  # every option is checked here, before any work
        num_workers=_as_int(cfg, "num_workers"),
        scenes_per_part=_as_int(cfg, "scenes_per_part"),
        shard=shard_spec(cfg.shard, cfg.get("num_shards")),
        strict=bool(cfg.strict),
        overwrite=bool(cfg.overwrite),
        progress=bool(cfg.progress),
        fingerprint=str(cfg.get("fingerprint", "stat")),
    )
    if cfg.data.get("raw_root") is None:
        raise ValueError(f"set data.raw_root=<folder of the raw {cfg.data.name} dataset> to convert it")
    converter = instantiate(cfg.data.converter)
    out_dir = Path(cfg.cache_root) / cfg.data.name / cfg.data.split
    manifest = convert_split(converter, out_dir, settings)
    config_path = out_dir / CONFIG_NAME
    text = OmegaConf.to_yaml(cfg, resolve=True)
    # the configuration of the last run that changed the split; a run that changed nothing writes nothing
    if manifest["last_run"]["cache_changed"] or not config_path.exists():
        try:
            atomic_write_text(config_path, text)
        except OSError as exc:
            if manifest["last_run"]["cache_changed"]:
                raise CacheError(f"{config_path}: cannot write the run configuration: {exc}") from None
            log.warning("%s: not written (%s)", config_path, exc)
    print(summary_line(manifest, out_dir), flush=True)
    return manifest
