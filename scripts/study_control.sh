#!/usr/bin/env bash
# The control-centric study of docs/results.md in one command: do forward dynamics (FD), inverse dynamics (ID) and
# masked hindsight control (MHC) help fine-tuning on real Argoverse 1 (map-less, ../shared/data/av1), alone, as
# the three together, and on top of TCL + TRL? The protocol of the label-efficiency study (scripts/study_av1.sh)
# with the budget that made TCL + TRL work there (its "pe10" variant): pre-training on all 1,956 train scenes
# without labels for 10 epochs (one pre-training per arm, seed 0), fine-tuning on 10 % (10 epochs) and 100 %
# (2 epochs) of the labels with seeds 0 1 2, the last checkpoint evaluated on the 579 val scenes.
#   1. Forecast-MAE (1.9 M), 10 % and 100 % labels
#   2. QCNet-small (336 K), 10 % labels (pre-training peak lr 5e-4, the value docs/results.md found for it on AV1)
# Re-running resumes (every stage whose outputs exist is reused). Outputs: outputs/study_control/<backbone>/
# {results.json,results.md,curves.png}. About 7 h on the 2-core CPU VM.
#   bash scripts/study_control.sh                 # both
#   bash scripts/study_control.sh forecast_mae    # one of them
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=outputs/study_control
ARMS=(scratch tcl_trl control fd id mhc tcl_trl_control)
COMMON=(--cache-root "$OUT/cache" --arms "${ARMS[@]}" --seeds 0 1 2 --pretrain-epochs 10 --workers 1
        --paired tcl_trl_control:tcl_trl
        --finetune-overrides +trainer.enable_progress_bar=false)
ORDER=(forecast_mae qcnet_small)
[[ $# -gt 0 ]] && ORDER=("$@")
for backbone in "${ORDER[@]}"; do
  # runs recorded by earlier sessions (benchmarks/studies/) are taken, not repeated
  RECORD=benchmarks/studies/control_$backbone.json
  REUSE=(); [[ -f "$RECORD" ]] && REUSE=(--reuse-results "$RECORD")
  case "$backbone" in
    forecast_mae)
      "$PY" scripts/study_av1.py --out "$OUT/forecast_mae" "${COMMON[@]}" \
          --fractions 0.1 1.0 --finetune-epochs 0.1=10 1.0=2 --val-every 0.1=2 1.0=1 \
          --batch-size 16 --finetune-lr 1e-3 --model forecast_mae \
          --experiment smartpretrain_forecast_mae_cpu_small --plot "$OUT/forecast_mae/curves.png" "${REUSE[@]}" \
          --pretrain-overrides +trainer.enable_progress_bar=false ;;
    qcnet_small)
      "$PY" scripts/study_av1.py --out "$OUT/qcnet_small" "${COMMON[@]}" \
          --fractions 0.1 --finetune-epochs 0.1=10 --val-every 0.1=2 \
          --batch-size 8 --finetune-lr 1e-3 --model qcnet_small \
          --experiment smartpretrain_cpu_small --plot "$OUT/qcnet_small/curves.png" "${REUSE[@]}" \
          --pretrain-overrides +trainer.enable_progress_bar=false ssl.lr_peak=5e-4 ;;
    *) echo "unknown backbone $backbone (have: forecast_mae qcnet_small)" >&2; exit 2 ;;
  esac
done
for backbone in "${ORDER[@]}"; do echo "== $backbone"; cat "$OUT/$backbone/results.md"; done
