#!/usr/bin/env bash
# Builds the wheelhouse the Linux packages ship: the agent's wheel, the wheels of its runtime
# dependencies (from PyPI, binary where available) and pip (used once, offline, to fill the venv).
#
# usage: installers/build-wheelhouse.sh OUTDIR
#   PYTHON  the Python the package will run on (default /usr/bin/python3): binary wheels and the
#           package's python3 dependency are chosen for its X.Y.
# Writes OUTDIR/*.whl and OUTDIR/python-abi (X.Y).
set -euo pipefail

usage() {
    echo "usage: $0 OUTDIR   (env PYTHON: target interpreter, default /usr/bin/python3)" >&2
    exit 2
}
[ "$#" -eq 1 ] || usage
out=$1
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-/usr/bin/python3}
command -v "$python" >/dev/null || { echo "build-wheelhouse: $python not found; set PYTHON=/path/to/python3" >&2; exit 2; }
"$python" -m pip --version >/dev/null 2>&1 || {
    echo "build-wheelhouse: $python has no pip; install python3-pip (Debian) or set PYTHON" >&2; exit 2; }

# The laptop package carries the agent (and common/, the helpers it shares with the collector and the
# gate) only: the collector (server/) and the gate are left out of the wheel.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp "$repo/pyproject.toml" "$repo/setup.py" "$repo/README.md" "$src/"
for package in agent common policies; do
    cp -r "$repo/$package" "$src/$package"
done
find "$src" -name __pycache__ -type d -prune -exec rm -rf {} +

mkdir -p "$out"
rm -f "$out"/*.whl
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$out" "${src}[yaml]" pip
"$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' > "$out/python-abi"
echo "build-wheelhouse: $(find "$out" -name '*.whl' | wc -l) wheels for Python $(cat "$out/python-abi") in $out" >&2
