"""Train / fine-tune a backbone for forecasting (``train.sh``; the work: :mod:`smartpretrain.runs.finetuning`).

python -m smartpretrain.finetune data=av2 cache_root=cache model=qcnet trainer=gpu trainer.devices=8
python -m smartpretrain.finetune data=av1 model=qcnet_small max_epochs=5 ckpt_path=https://.../model.ckpt
python -m smartpretrain.finetune data=av2 pretrained_ckpt=outputs/pretrain/.../last.ckpt copy_refine=true
python -m smartpretrain.finetune data=av1 model=qcnet_small logger=tensorboard save_top_k=1
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from smartpretrain.runs.cli import hydra_run_dir, one_line_errors, refuse_unshared_launch
from smartpretrain.runs.console import quiet_libraries
from smartpretrain.runs.finetuning import EXPECTED_ERRORS, run


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    with one_line_errors("smartpretrain.finetune", EXPECTED_ERRORS):
        metrics = run(cfg, hydra_run_dir())
    print(json.dumps(metrics, indent=2), flush=True)


if __name__ == "__main__":
    refuse_unshared_launch("smartpretrain.finetune")
    main()
