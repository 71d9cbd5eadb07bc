#!/usr/bin/env bash
# Shared set-up of scripts/test.sh and scripts/run-node.sh: a Python >= 3.11 virtualenv in .venv
# with this project installed editable, plus its test and dev extras.
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

# Reinstall only when the project's metadata changed (the install is editable).
stamp=.venv/.pyerl-node-installed
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,dev]'
    echo "$wanted" > "$stamp"
fi
