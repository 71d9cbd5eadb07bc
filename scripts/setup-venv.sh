#!/usr/bin/env bash
# Shared set-up of scripts/test.sh and scripts/run-node.sh: a Python >= 3.11 virtualenv in .venv
# with this project installed editable. `setup-venv.sh test,dev` adds those extras; without an
# argument only the package itself is installed (it has no runtime dependencies).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-python3}
is_root() { [ "$(id -u)" -eq 0 ]; }

version_ok() {
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$python" = python3 ] && is_root && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing python3 and python3-venv with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends python3 python3-venv
    else
        echo "setup: need $python (>= 3.11) with the venv module;" \
             "on Debian/Ubuntu: apt-get install python3 python3-venv" >&2
        exit 1
    fi
fi
if ! version_ok; then
    echo "setup: Python >= 3.11 is required; $python is $("$python" -V 2>&1)." \
         "Set PYTHON=/path/to/python3.11 (or newer) and run again." >&2
    exit 1
fi

if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    rm -rf .venv
    "$python" -m venv .venv
fi

# Reinstall only when the project's metadata changed (the install is editable) or when extras
# are asked for that the last install did not have. The build and the C source of the compiled
# codec core count as metadata: the editable install compiles it in place (pure Python if it
# cannot; PYERL_NODE_PURE=1 skips it).
extras=${1:-}
stamp=.venv/.pyerl-node-installed
metadata=$(cat pyproject.toml setup.py pyerl_node/proto/_cetf.c | sha256sum | cut -d' ' -f1)
read -r have_metadata have_extras < "$stamp" 2>/dev/null || true
if [ "${have_metadata:-}" != "$metadata" ] || { [ -n "$extras" ] && [ "${have_extras:-}" != "$extras" ]; }; then
    target=.
    [ -n "$extras" ] && target=".[$extras]"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e "$target"
    echo "$metadata ${extras:-${have_extras:-}}" > "$stamp"
fi
