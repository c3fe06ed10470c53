"""Convert a raw dataset split into the scene cache.

python -m smartpretrain.convert data=av2 data.raw_root=/data/av2 data.split=val cache_root=cache num_workers=8
python -m smartpretrain.convert data=av1 data.raw_root=/data/av1 data.split=train shard=0/4
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from smartpretrain.data.cache import CacheError, atomic_write_text
from smartpretrain.data.conversion import ConversionSettings, StrictModeError, convert_split, summary_line

log = logging.getLogger("smartpretrain.convert")


def run(cfg: DictConfig) -> dict:
    """Run one conversion from a composed config; returns the manifest."""
    if cfg.data.get("raw_root") is None:
        raise ValueError(f"set data.raw_root=<folder of the raw {cfg.data.name} dataset> to convert it")
    converter = instantiate(cfg.data.converter)
    out_dir = Path(cfg.cache_root) / cfg.data.name / cfg.data.split
    settings = ConversionSettings(
        num_workers=int(cfg.num_workers),
        scenes_per_part=int(cfg.scenes_per_part),
        shard=str(cfg.shard),
        strict=bool(cfg.strict),
        overwrite=bool(cfg.overwrite),
        progress=bool(cfg.progress),
    )
    manifest = convert_split(converter, out_dir, settings)
    atomic_write_text(out_dir / "convert_config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    print(summary_line(manifest, out_dir), flush=True)
    return manifest


@hydra.main(version_base="1.3", config_path="../configs", config_name="convert")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (StrictModeError, CacheError, FileNotFoundError, ValueError) as exc:
        # expected failures (bad input under strict=true, a cache of another schema, a wrong path or shard):
        # one clear line, no traceback; parts already written stay on disk and a re-run resumes from them
        print(f"smartpretrain.convert: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
