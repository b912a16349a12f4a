#!/usr/bin/env bash
# Set up (a .venv in the checkout) and run the demo: train on scikit-learn's digits, save the
# model into a store, reload it in a new process and predict one picture, from Python and the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[sklearn,images,serve]" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
export PERSISTKIT_STORE="${PERSISTKIT_STORE:-$(mktemp -d)/store}"
.venv/bin/python examples/quickstart.py
echo
echo "\$ persistkit ls"
.venv/bin/persistkit ls
echo
echo "\$ persistkit verify digits"
.venv/bin/persistkit verify digits
