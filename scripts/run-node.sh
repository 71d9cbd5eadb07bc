#!/usr/bin/env bash
# Runs a pyerl_node node (set-up included): bash scripts/run-node.sh [--cookie C] [...]
# The node name comes from PYERL_NAME (default py@127.0.0.1); arguments go to `pyerl-node run`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-venv.sh
exec .venv/bin/pyerl-node run --name "${PYERL_NAME:-py@127.0.0.1}" "$@"
