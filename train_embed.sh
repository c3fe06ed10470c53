#!/usr/bin/env bash
# Trajectory embeddings + FAISS index of a cache:  ./train_embed.sh data=av1 cache_root=cache encoder.embedding_dim=16
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-$( [ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python )}
exec "$PY" -m smartpretrain.train_embed "$@"
