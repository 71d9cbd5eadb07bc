#!/usr/bin/env bash
# The package as a user gets it: build the sdist and the wheel, install the wheel alone in a
# fresh virtualenv outside the repository, and run its two commands there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || {
    cat "$work/build.log" >&2; exit 1; }
sdist=$(ls "$work"/dist/*.tar.gz)
wheel=$(ls "$work"/dist/*.whl)
# The sdist must carry what its tests need.
listing=$(tar -tzf "$sdist")
for member in tests/conftest.py tests/strategies.py tests/vectors/etf/etf_corpus_otp28.json \
              interop_tests/beam.py LICENSE CHANGELOG.md; do
    grep -q "/$member\$" <<<"$listing" || { echo "sdist lacks $member" >&2; exit 1; }
done
python3 -m venv "$work/venv"
(cd "$work" && "$work/venv/bin/python" -m pip install -q --disable-pip-version-check "$wheel")
(cd "$work" && "$work/venv/bin/pyerl-node" --version)
(cd "$work" && "$work/venv/bin/python" -m epmd --help >/dev/null)
# every module of the wheel imports, alone, outside the repository
(cd "$work" && "$work/venv/bin/python" - <<'PY'
import importlib, pkgutil
import epmd, pyerl_node
names = [m.name for pkg in (pyerl_node, epmd)
         for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")
         if not m.name.endswith(".__main__")]
for name in names:
    importlib.import_module(name)
print(f"imports ok: {len(names)} modules, version {pyerl_node.__version__}")
PY
)
echo "package ok: $(basename "$sdist") $(basename "$wheel")"
