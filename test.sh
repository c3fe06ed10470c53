#!/usr/bin/env bash
# Leaderboard submission from a checkpoint:  ./test.sh data=av2 cache_root=cache ckpt_path=<path | https:// | hf://>
# (data=womd: the Waymo motion challenge submission.tar.gz; docs/submission.md)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-$( [ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python )}
exec "$PY" -m smartpretrain.evaluate mode=test "$@"
