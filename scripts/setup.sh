#!/usr/bin/env bash
# Installs sugar and what it needs on a fresh machine. Idempotent.
#   bash scripts/setup.sh            # the package, dev tools, offline teachers, faiss, plots, HF,
#                                    # the server, the milvus index backend, triton (gpu: the
#                                    # alignment DP's GPU kernels; on CPU only their tests run them)
#   SUGAR_EXTRAS=dev,teachers bash scripts/setup.sh
# torch: the CPU build 2.13.0 is installed only when no torch is importable, so a user's own
# (CUDA) torch is left alone. Plain pip on purpose: uv and poetry ignore the local CPU wheel.
# Python: $PYTHON, else the active virtual environment, else the project's .venv, else python3;
# a python3 (or $PYTHON) that is externally managed (PEP 668: Debian/Ubuntu's own) gets a project .venv
# instead, and `sugar` is linked onto the PATH (scripts/python_env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python_env.sh
PY=$(sugar_python create)
extras=${SUGAR_EXTRAS:-dev,teachers,index,report,hf,serve,milvus,gpu}

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] torch not found: installing torch==2.13.0 (CPU build)"
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[${extras}]"
# numba compiles sugar.align's CPU kernels once per machine and caches them on disk: do it here
# (about a minute on 2 cores) rather than in the first test or training step
"$PY" -c "from sugar.align._compiled import compile_kernels; compile_kernels()" \
  || echo "[setup] could not compile sugar.align's kernels: the torch implementation will run"
sugar_link_command "$PY"
echo "[setup] sugar $("$PY" -c 'import sugar; print(sugar.__version__)') with torch $("$PY" -c 'import torch; print(torch.__version__)')"
