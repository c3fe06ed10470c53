#!/usr/bin/env bash
# Index / search / score embeddings, k-NN probe:  ./retrieve.sh action=evaluate index=<run>/index queries=<run>/queries.parquet
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-$( [ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python )}
exec "$PY" -m smartpretrain.retrieve "$@"
