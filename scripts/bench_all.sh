#!/usr/bin/env bash
# Every benchmark, one after another (never in parallel: they time a shared CPU), then the summary of
# docs/benchmarks.md. JSON goes to benchmarks/results/. About 25 min on the 2-core CPU VM.
#   bash scripts/bench_all.sh                 # CPU
#   DEVICE=cuda bash scripts/bench_all.sh     # also the GPU training steps in bf16 (on a GPU machine)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=benchmarks/results
mkdir -p "$OUT"

echo "== conversion: AV2 fixture x2000, synthetic AV2 x1000, AV1 val, WOMD fixture x1000, demo data x10000"
"$PY" scripts/bench_convert.py --copies 2000 --synthetic 1000 --womd-copies 1000 --demo-scenes 10000 \
    --workers 1 2 --repeat 3 --out "$OUT/convert.json"
echo "== cache record formats"
"$PY" scripts/bench_cache_formats.py --out "$OUT/cache_formats.json"
echo "== data loading: cache / fine-tune / pre-train pipelines, workers 0 1 2"
"$PY" scripts/bench_loading.py --workers 0 1 2 --out "$OUT/loading.json"
echo "== training steps (CPU fp32): fine-tune and SSL"
"$PY" scripts/bench_train.py --model qcnet qcnet_small forecast_mae --batch-sizes 1 4 --steps 3 \
    --out "$OUT/train_cpu.json"
if [[ "${DEVICE:-cpu}" == cuda* ]]; then
    echo "== training steps (GPU bf16)"
    "$PY" scripts/bench_train.py --model qcnet forecast_mae --batch-sizes 4 16 --steps 10 --device "$DEVICE" \
        --precision bf16 --out "$OUT/train_gpu_bf16.json"
    "$PY" scripts/bench_train.py --model qcnet forecast_mae --batch-sizes 4 16 --steps 10 --device "$DEVICE" \
        --precision fp32 --out "$OUT/train_gpu_fp32.json"
fi
"$PY" scripts/bench_report.py
