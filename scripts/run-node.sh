#!/usr/bin/env bash
# Runs a pyerl_node node (set-up included): bash scripts/run-node.sh [--cookie C] [...]
# The node is py@<this host> (--sname py) unless PYERL_NAME or --name/--sname says otherwise;
# the arguments go to `pyerl-node run`. Installs only the package itself, no extras.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-venv.sh
if [ -n "${PYERL_NAME:-}" ]; then
    case $PYERL_NAME in
        *@*.*) set -- --name "$PYERL_NAME" "$@" ;;
        *) set -- --sname "$PYERL_NAME" "$@" ;;
    esac
fi
exec .venv/bin/pyerl-node run "$@"
