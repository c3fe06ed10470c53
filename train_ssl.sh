#!/usr/bin/env bash
# Self-supervised pre-training. Arguments are Hydra overrides, e.g.
#   ./train_ssl.sh experiment=smartpretrain_qcnet_av2 cache_root=/data/cache
#   ./train_ssl.sh experiment=smartpretrain_cpu_small data=av1 cache_root=cache max_epochs=3
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-$( [ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python )}
exec "$PY" -m smartpretrain.pretrain "$@"
