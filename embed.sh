#!/usr/bin/env bash
# Per-agent embeddings of a cache split:  ./embed.sh data=av1 cache_root=cache split=val ckpt_path=<path | https:// | hf://>
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-$( [ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python )}
exec "$PY" -m smartpretrain.embed "$@"
