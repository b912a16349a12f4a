#!/usr/bin/env bash
# Set up (a .venv in the checkout) and run the demo: train on scikit-learn's digits, save the
# model into a store, reload it in a new process and predict one picture — from Python, then
# from the command line. Ends by printing how to serve it over HTTP.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "creating a virtual environment in .venv"
  "${PYTHON:-python3}" -m venv .venv
fi
echo "installing persistkit with its sklearn, images and serve extras into .venv" \
  "(pip install -e; up to a minute the first time, quick after that)"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[sklearn,images,serve]" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
work="$(mktemp -d)"
export PERSISTKIT_STORE="${PERSISTKIT_STORE:-$work/store}"
.venv/bin/python examples/quickstart.py "$work"
run() { echo; echo "\$ persistkit $*"; .venv/bin/persistkit "$@"; }
run ls
run predict digits "$work/one.png"
run verify digits
run show digits
echo
echo "To serve it:  PERSISTKIT_STORE=$PERSISTKIT_STORE .venv/bin/persistkit serve digits"
echo "then open http://127.0.0.1:8000/ and pick $work/one.png"
