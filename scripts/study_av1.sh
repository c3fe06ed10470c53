#!/usr/bin/env bash
# The real-data study of docs/results.md in one command: does SSL pre-training help fine-tuning on real
# Argoverse 1 (map-less, ../shared/data/av1)? Forecast-MAE (reference size, 1.9 M parameters) pre-trained on all
# 1,956 train scenes without labels with TCL, TRL, TCL + TRL or MAE, then fine-tuned on 10 % and 100 % of the
# train labels with 3 seeds each (same budget per fraction for every arm, scratch included), evaluated on the 579
# val scenes. Re-running resumes (stages whose outputs exist are reused). Extra arguments go to study_av1.py.
#   bash scripts/study_av1.sh                              # ~1 h 15 min on the 2-core CPU VM
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" scripts/study_av1.py \
    --out outputs/study_av1 \
    --arms scratch tcl trl tcl_trl mae \
    --seeds 0 1 2 \
    --fractions 0.1 1.0 \
    --pretrain-epochs 3 \
    --finetune-epochs 0.1=10 1.0=2 \
    --val-every 0.1=2 1.0=1 \
    --batch-size 16 --finetune-lr 1e-3 --workers 1 \
    --model forecast_mae --experiment smartpretrain_forecast_mae_cpu_small \
    --pretrain-overrides +trainer.enable_progress_bar=false \
    --finetune-overrides +trainer.enable_progress_bar=false \
    --plot docs/img/study_av1_curves.png \
    "$@"
