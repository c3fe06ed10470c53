#!/usr/bin/env bash
# Fine-tune / train for forecasting. Arguments are Hydra overrides, e.g.
#   ./train.sh data=av2 cache_root=cache model=qcnet trainer=gpu trainer.devices=8 ckpt_path=hf://org/repo/ssl.ckpt
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-$( [ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python )}
exec "$PY" -m smartpretrain.finetune "$@"
