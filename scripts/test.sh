#!/usr/bin/env bash
# The project's test command: lint, format check, type check, then the whole test suite
# (slow lane included) on 2 workers with one torch thread each. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python_env.sh  # the Python setup.sh installed into (a .venv under PEP 668)
PY=$(sugar_python)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 SUGAR_TORCH_THREADS=1
export NUMBA_THREADING_LAYER=workqueue HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

echo "== ruff check";         "$PY" -m ruff check src tests benchmarks conftest.py
echo "== ruff format --check"; "$PY" -m ruff format --check src tests benchmarks conftest.py
echo "== mypy src/";          "$PY" -m mypy
echo "== pytest"
"$PY" -m pytest -n 2 --durations=20 tests src/sugar "$@"
