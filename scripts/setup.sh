#!/usr/bin/env bash
# Create .venv and install the project. torch is installed first and pinned (TORCH_SPEC) because an unpinned
# torch resolves to the newest CUDA build (GBs); on a CPU machine the CPU wheel is what we want.
# Re-running is cheap: nothing is reinstalled unless pyproject.toml or TORCH_SPEC changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.smartpretrain-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $TORCH_SPEC"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check "$TORCH_SPEC"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
  echo "$want" > "$stamp"
fi
echo "setup: $(.venv/bin/python -c 'import smartpretrain, torch; print("smartpretrain ok, torch", torch.__version__)')"
