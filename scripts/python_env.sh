# Sourced by scripts/setup.sh and scripts/test.sh: which Python sugar is installed into and run
# with, so that both README commands work as written on a stock Debian/Ubuntu machine, whose
# python3 refuses `pip install` (PEP 668, "externally-managed-environment").
#   1. $PYTHON, when set, unless it is externally managed: then the project's .venv, made from
#      it (pip would refuse to install into it);
#   2. the active virtual environment ($VIRTUAL_ENV), when one is active;
#   3. the project's .venv, when it exists (setup.sh made it earlier);
#   4. python3 itself, unless it is externally managed: then the project's .venv (created by
#      `sugar_python create`, which setup.sh calls).
# Prints the interpreter's path. `sugar_python create` may create .venv; plain `sugar_python`
# never writes anything. A .venv that exists without bin/python is refused, never filled or
# deleted: after a failed creation only what that creation wrote is removed.
# A new .venv keeps the package sources pip used when it was made (find-links, index URLs,
# constraints: PIP_* variables and the pip.conf files) in its own pip.conf, so that its pip
# installs from the same place later, from any shell (a machine whose torch wheel lies on local
# disk never falls back to PyPI's CUDA build).

SUGAR_ROOT=${SUGAR_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
SUGAR_VENV=${SUGAR_VENV:-$SUGAR_ROOT/.venv}

sugar_externally_managed() {  # is "$1" a Python outside any venv whose stdlib is marked (PEP 668)?
  "$1" - <<'PY' 2>/dev/null
import os, sys, sysconfig
marked = os.path.isfile(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if marked and sys.prefix == sys.base_prefix else 1)
PY
}

sugar_create_venv() {  # python -m venv into the absent $SUGAR_VENV; on failure remove only that
  if ! "$1" -m venv "$SUGAR_VENV" >&2; then
    rm -rf -- "$SUGAR_VENV"  # this call created it: sugar_python refuses a $SUGAR_VENV that exists
    return 1
  fi
  sugar_keep_pip_sources "$SUGAR_VENV/bin/python" \
    || echo "[sugar] could not record pip's package sources in $SUGAR_VENV/pip.conf" >&2
}

sugar_keep_pip_sources() {  # write the sources pip sees now into the new venv's own pip.conf
  local python=$1
  "$python" -m pip config list 2>/dev/null | "$python" -c '
import ast, re, sys
KEYS = ("index-url", "extra-index-url", "find-links", "constraint", "trusted-host", "cert",
        "no-index")
RANK = {"global": 0, "install": 1, ":env:": 2}  # sections of the merged files; PIP_* wins
chosen = {}
for line in sys.stdin:
    found = re.fullmatch(r"([^.]*)\.([a-z-]+)=(.*)", line.strip())
    if not found or found[1] not in RANK or found[2] not in KEYS:
        continue
    rank = RANK[found[1]]
    if found[2] not in chosen or rank >= chosen[found[2]][0]:
        chosen[found[2]] = (rank, ast.literal_eval(found[3]))
if chosen:
    with open(sys.argv[1], "w", encoding="utf-8") as conf:
        conf.write("# written by sugar setup: the package sources when this venv was made\n")
        conf.write("[global]\n" + "".join(f"{k} = {v}\n" for k, (_, v) in sorted(chosen.items())))
' "${python%/bin/python}/pip.conf"
}

sugar_python() {
  local system
  if [[ -n "${PYTHON:-}" ]]; then
    if ! sugar_externally_managed "$PYTHON"; then echo "$PYTHON"; return; fi
    system=$PYTHON  # pip refuses to install into it: the project's .venv, made from it
    if [[ -x "$SUGAR_VENV/bin/python" ]]; then echo "$SUGAR_VENV/bin/python"; return; fi
  else
    if [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
      echo "$VIRTUAL_ENV/bin/python"; return
    fi
    if [[ -x "$SUGAR_VENV/bin/python" ]]; then echo "$SUGAR_VENV/bin/python"; return; fi
    system=$(command -v python3) || { echo "[sugar] no python3 on PATH" >&2; return 1; }
    if ! sugar_externally_managed "$system"; then echo "$system"; return; fi
  fi
  if [[ "${1:-}" != create ]]; then echo "$SUGAR_VENV/bin/python"; return; fi
  if [[ -e "$SUGAR_VENV" || -L "$SUGAR_VENV" ]]; then  # not ours to fill or delete
    echo "[sugar] $SUGAR_VENV exists but has no bin/python: not a virtual environment setup made; move it away (or set SUGAR_VENV, or activate a virtual environment) and run setup again" >&2
    return 1
  fi
  echo "[sugar] $system is externally managed (PEP 668): creating the virtual environment $SUGAR_VENV" >&2
  if ! sugar_create_venv "$system"; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
      local version
      version=$("$system" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      echo "[sugar] installing python${version}-venv" >&2
      { apt-get update -q && apt-get install -y -q "python${version}-venv"; } >&2 || return 1
      sugar_create_venv "$system" || return 1
    else
      echo "[sugar] could not create $SUGAR_VENV: install your distribution's python3-venv package (or activate a virtual environment) and run setup again" >&2
      return 1
    fi
  fi
  echo "$SUGAR_VENV/bin/python"
}

sugar_link_command() {  # make `sugar` from the project's venv callable as the README writes it
  local python=$1 target
  [[ "$python" == "$SUGAR_VENV/bin/python" ]] || return 0
  target="$SUGAR_VENV/bin/sugar"
  [[ -x "$target" ]] || return 0
  local dir
  for dir in "$HOME/.local/bin" /usr/local/bin; do
    case ":$PATH:" in *":$dir:"*) ;; *) continue ;; esac
    if [[ -e "$dir/sugar" && ! -L "$dir/sugar" ]]; then
      echo "[sugar] $dir/sugar exists and is not sugar's link: left alone" >&2; continue
    fi
    if { mkdir -p "$dir" && ln -sfn "$target" "$dir/sugar"; } 2>/dev/null; then
      echo "[sugar] linked $dir/sugar -> $target" >&2; return 0
    fi
  done
  echo "[sugar] run 'source $SUGAR_VENV/bin/activate' to put sugar on your PATH" >&2
}
