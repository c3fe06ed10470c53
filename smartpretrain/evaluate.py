"""Evaluate a checkpoint (``val.sh`` / ``test.sh``; the work: :mod:`smartpretrain.runs.evaluation`).

    python -m smartpretrain.evaluate mode=val data=av2 cache_root=cache ckpt_path=<path | https://... | hf://...>
    python -m smartpretrain.evaluate mode=test data=av2 cache_root=cache ckpt_path=...   # AV2 submission parquet
    python -m smartpretrain.evaluate mode=test data=womd cache_root=cache ckpt_path=...  # WOMD submission.tar.gz

``val`` prints a metrics table (overall and per dataset) and writes ``metrics.json``; ``test`` writes
``submission.parquet`` for the scored agents of each scene (WOMD: the challenge's ``submission.tar.gz`` with every
track to predict; docs/submission.md). ``num_plots=N`` also saves PNGs of the first N scenes
with their K predicted futures. A bad option, an empty split or missing weights end with one line
``smartpretrain.evaluate: error: ...`` and exit status 2.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from smartpretrain.runs.cli import hydra_run_dir, one_line_errors, refuse_unshared_launch
from smartpretrain.runs.console import quiet_libraries
from smartpretrain.runs.evaluation import EXPECTED_ERRORS, evaluate


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    with one_line_errors("smartpretrain.evaluate", EXPECTED_ERRORS):
        evaluate(cfg, hydra_run_dir())


if __name__ == "__main__":
    refuse_unshared_launch("smartpretrain.evaluate")
    main()
