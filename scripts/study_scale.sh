#!/usr/bin/env bash
# The pre-training data-scaling study of docs/results.md in one command: how does fine-tuned minFDE_6 on real
# Argoverse 1 (map-less, ../shared/data/av1) grow with the number of unlabelled pre-training scenes?
# Forecast-MAE (reference size, 1.9 M parameters) pre-trained with TCL + TRL on nested pools of 10 / 25 / 50 / 100 %
# of the 1,956 train scenes, each for the same 1,220 optimizer steps (--budget steps: 10 epochs of the whole split;
# smaller pools are repeated), plus scratch; every arm fine-tuned on the same 10 % of the train labels (196 scenes)
# for 10 epochs with seeds 0 1 2 and evaluated on the 579 val scenes; power law fitted to minFDE_6 vs pool size.
# Re-running resumes (stages whose outputs exist are reused). Extra arguments go to study_scale.py, e.g.
# --budget epochs (the same epochs per pool: compute grows with the data; use another --out).
#   bash scripts/study_scale.sh                            # ~1.5 h on the 2-core CPU VM (estimate)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" scripts/study_scale.py \
    --out outputs/study_scale \
    --fractions 0.1 0.25 0.5 1.0 \
    --objective tcl_trl \
    --budget steps --pretrain-epochs 10 \
    --seeds 0 1 2 \
    --label-fraction 0.1 --finetune-epochs 10 --val-every 2 \
    --batch-size 16 --finetune-lr 1e-3 --workers 1 \
    --model forecast_mae --experiment smartpretrain_forecast_mae_cpu_small \
    --pretrain-overrides +trainer.enable_progress_bar=false \
    --finetune-overrides +trainer.enable_progress_bar=false \
    --plot docs/img/study_scale_av1.png \
    "$@"
