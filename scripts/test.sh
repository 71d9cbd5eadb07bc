#!/usr/bin/env bash
# The whole test suite, from a fresh Debian/Ubuntu machine: set-up, then ruff, mypy, the package
# (sdist + wheel installed alone), the docs and pytest (unit tests, and interop tests against
# real OTP 25/Elixir from Debian and OTP 28 from PyPI, on loopback and across network
# namespaces when run as root).
# Run as root to have erlang-nox and elixir installed; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-venv.sh test,dev,docs

missing=()
command -v erl >/dev/null 2>&1 || missing+=(erlang-nox)
command -v elixir >/dev/null 2>&1 || missing+=(elixir)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: installing ${missing[*]} with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
        echo "test.sh: ${missing[*]} not installed and not root: interop tests against" \
             "OTP 25/Elixir will be skipped. To run them: sudo apt-get install ${missing[*]}" >&2
    fi
fi

failed=()
echo "== ruff" && .venv/bin/ruff check . || failed+=(ruff)
echo "== mypy" && .venv/bin/mypy || failed+=(mypy)
echo "== package" && bash scripts/check-package.sh || failed+=(package)
if [ -f mkdocs.yml ]; then
    echo "== docs" && .venv/bin/mkdocs build --strict --quiet --site-dir "$(mktemp -d)" \
        || failed+=(docs)
fi
if command -v cc >/dev/null 2>&1 && ! .venv/bin/python -c \
        'import sys, pyerl_node; sys.exit(not pyerl_node.compiled)'; then
    failed+=("the compiled codec core was not built although a C compiler is here")
fi
echo "== pytest"
status=0
PYTHONASYNCIODEBUG=1 .venv/bin/python -m pytest -p no:cacheprovider -ra --durations=10 \
    tests interop_tests "$@" || status=$?
case $status in
    0) ;;
    5) failed+=("pytest (no tests were collected)") ;;
    *) failed+=("pytest (exit $status)") ;;
esac

# The run above used the compiled codec core where it is built; the whole suite runs again on
# the pure-Python codec (PYERL_NODE_PURE=1 keeps the compiled core unloaded).
echo "== pytest, pure-Python codec (the run above: compiled=$(.venv/bin/python -c \
    'import pyerl_node; print(pyerl_node.compiled)'))"
PYERL_NODE_PURE=1 PYTHONASYNCIODEBUG=1 .venv/bin/python -m pytest -p no:cacheprovider -q \
    tests interop_tests "$@" \
    || failed+=("pytest, pure-Python codec")

if [ ${#failed[@]} -gt 0 ]; then
    printf 'test.sh: FAILED: %s\n' "${failed[*]}" >&2
    exit 1
fi
