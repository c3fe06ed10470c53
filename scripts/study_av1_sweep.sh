#!/usr/bin/env bash
# The sweep of docs/results.md ("What was tried"): TCL + TRL vs scratch on real AV1, 3 seeds, one knob at a time
# around the main study (scripts/study_av1.sh). Runs that repeat one of the main study's (scratch with its
# fine-tuning budget) or of the pe10 variant (its pre-training) are linked, not re-run; every stage resumes.
#   bash scripts/study_av1_sweep.sh              # all variants, ~1 h 45 min on the 2-core CPU VM
#   bash scripts/study_av1_sweep.sh pe10 tau0.2  # only these (names below)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BASE=outputs/study_av1
OUT=outputs/study_av1_sweep
PE10=(--pretrain-epochs 10 --pretrain-overrides +trainer.enable_progress_bar=false)
# variant -> study_av1.py options (--pretrain-overrides last: it takes every following word)
declare -A VARIANTS=(
  [pe10]="--fractions 0.1 --finetune-epochs 0.1=10 --val-every 0.1=2 ${PE10[*]}"
  [pe10_ft30]="--fractions 0.1 --finetune-epochs 0.1=30 --val-every 0.1=5 ${PE10[*]}"
  [pe10_f1]="--fractions 1.0 --finetune-epochs 1.0=2 --val-every 1.0=1 ${PE10[*]}"
  [tau0.2]="--fractions 0.1 --finetune-epochs 0.1=10 --val-every 0.1=2 ${PE10[*]} ssl.objectives.tcl.temperature=0.2"
  [lambda2]="--fractions 0.1 --finetune-epochs 0.1=10 --val-every 0.1=2 ${PE10[*]} ssl.objectives.trl.weight=2.0"
  [mae_pe10]="--arms scratch mae --fractions 0.1 --finetune-epochs 0.1=10 --val-every 0.1=2 ${PE10[*]}"  # MAE, same budget
)
ORDER=(pe10 pe10_ft30 pe10_f1 tau0.2 lambda2 mae_pe10)
[[ $# -gt 0 ]] && ORDER=("$@")
link() {  # link $1/$3 to $2/$3 when $2/$3 finished ($4: its done-file)
  if [[ ! -e "$1/$3" && -e "$2/$3/$4" ]]; then ln -sfn "$PWD/$2/$3" "$1/$3"; fi
}
for variant in "${ORDER[@]}"; do
  [[ -n "${VARIANTS[$variant]:-}" ]] || { echo "unknown variant $variant (have: ${!VARIANTS[*]})" >&2; exit 2; }
  out="$OUT/$variant"; mkdir -p "$out"
  for s in 0 1 2; do
    [[ "$variant" == *_ft* ]] || for f in 0.1 1; do link "$out" "$BASE" "finetune_f${f}_scratch_s$s" eval_metrics.json; done
  done
  [[ "$variant" == pe10_?* ]] && link "$out" "$OUT/pe10" pretrain_tcl_trl_s0 final_metrics.json
  # shellcheck disable=SC2086  # the variant's options split on spaces
  "$PY" scripts/study_av1.py --out "$out" --cache-root "$BASE/cache" --arms scratch tcl_trl --seeds 0 1 2 \
      --batch-size 16 --finetune-lr 1e-3 --workers 1 --model forecast_mae \
      --experiment smartpretrain_forecast_mae_cpu_small --plot "$out/curves.png" \
      --finetune-overrides +trainer.enable_progress_bar=false ${VARIANTS[$variant]}
done
for variant in "${ORDER[@]}"; do echo "== $variant"; cat "$OUT/$variant/results.md"; done
