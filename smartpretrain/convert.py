"""Convert a raw dataset split into the scene cache (the work: :mod:`smartpretrain.runs.conversion`).

python -m smartpretrain.convert data=av2 data.raw_root=/data/av2 data.split=val cache_root=cache num_workers=8
python -m smartpretrain.convert data=av1 data.raw_root=/data/av1 data.split=train shard=0/4

Expected failures (a bad option, a wrong path, a cache of another schema, strict mode, a full disk, another process
converting the same shard) end with one line ``smartpretrain.convert: error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from smartpretrain.runs.cli import one_line_errors
from smartpretrain.runs.console import quiet_libraries
from smartpretrain.runs.conversion import EXPECTED_ERRORS, run


@hydra.main(version_base="1.3", config_path="../configs", config_name="convert")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    with one_line_errors("smartpretrain.convert", EXPECTED_ERRORS):
        run(cfg)


if __name__ == "__main__":
    main()
