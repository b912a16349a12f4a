#!/usr/bin/env bash
# Set up (a .venv in the checkout) and run the whole test suite, lint and type checks.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -k store -x
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
echo "== ruff"; .venv/bin/ruff check src plugins tests benchmarks
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; exec .venv/bin/python -m pytest "$@"
