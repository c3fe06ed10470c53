#!/usr/bin/env bash
# Forecast-MAE pre-train -> fine-tune on a converted AV1 cache, one seed, all train labels: scratch vs MAE vs
# SmartPretrain (TCL + TRL) vs all three (the "Forecast-MAE" tables of docs/results.md). A preset of study_av1.py:
# same stages (experiment=smartpretrain_forecast_mae_cpu_small pre-training on the train split without labels,
# fine-tuning with the same seed, schedule and budget per arm, evaluation of the last checkpoint on val).
#   python -m smartpretrain.demo && bash scripts/forecast_mae_study.sh demo/cache outputs/fmae_study_demo
#   bash scripts/forecast_mae_study.sh outputs/study_av1/cache outputs/fmae_study_av1   # real AV1, ~30 min
# Extra arguments go to study_av1.py (e.g. --pretrain-epochs 6).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${1:?usage: forecast_mae_study.sh CACHE_ROOT [OUT] [study_av1.py options]}
OUT=${2:-outputs/fmae_study}
shift $(( $# >= 2 ? 2 : 1 ))
"${PYTHON:-.venv/bin/python}" scripts/study_av1.py \
    --cache-root "$CACHE" --out "$OUT" \
    --arms scratch mae tcl_trl all --seeds 0 --fractions 1.0 \
    --pretrain-epochs 3 --finetune-epochs 1.0=3 --val-every 1.0=1 \
    --batch-size 16 --finetune-lr 1e-3 --workers 1 \
    --model forecast_mae --experiment smartpretrain_forecast_mae_cpu_small \
    "$@"
