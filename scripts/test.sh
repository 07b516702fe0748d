#!/usr/bin/env bash
# The whole test suite: lint, types, then pytest (agent, collector, browser, VPN namespaces, installers).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
echo "== ruff"; $PY -m ruff check agent server gate common policies tests benchmarks scripts
echo "== mypy"; $PY -m mypy
echo "== pytest"; $PY -m pytest -q "$@"
