"""Self-supervised pre-training of a backbone (``train_ssl.sh``; the work: :mod:`smartpretrain.runs.pretraining`).

python -m smartpretrain.pretrain data=av2 cache_root=cache model=qcnet trainer=gpu trainer.devices=8
python -m smartpretrain.pretrain experiment=smartpretrain_cpu_small data=av1 max_epochs=3
python -m smartpretrain.pretrain ssl.objectives.trl.weight=0          # TCL only
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from smartpretrain.runs.cli import hydra_run_dir, one_line_errors, refuse_unshared_launch
from smartpretrain.runs.console import quiet_libraries
from smartpretrain.runs.pretraining import EXPECTED_ERRORS, run


@hydra.main(version_base="1.3", config_path="../configs", config_name="pretrain")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    with one_line_errors("smartpretrain.pretrain", EXPECTED_ERRORS):
        metrics = run(cfg, hydra_run_dir())
    print(json.dumps(metrics, indent=2), flush=True)


if __name__ == "__main__":
    refuse_unshared_launch("smartpretrain.pretrain")
    main()
