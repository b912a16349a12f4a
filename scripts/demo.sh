#!/usr/bin/env bash
# Set up (a .venv in the checkout) and run the demo: train a small network on drawn pictures
# of garden gnomes (its class lives in the training script), save it with its labels and
# picture preprocessing, then ask about a new photo from a new process, the command line and
# a real Open Inference Protocol client talking to `persistkit serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "creating a virtual environment in .venv"
  "${PYTHON:-python3}" -m venv .venv
fi
echo "installing persistkit with pictures and serving, torch (CPU) and tritonclient into .venv" \
  "(pip install; a few minutes the first time, quick after that)"
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-demo.txt 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
work="$(mktemp -d)"
export PERSISTKIT_STORE="${PERSISTKIT_STORE:-$work/store}"
.venv/bin/python examples/gnome.py "$work"
cd "$work"  # a folder without the training code
run() { echo; echo "\$ persistkit $*"; "$OLDPWD/.venv/bin/persistkit" "$@"; }
run predict gnome photo.jpg other.jpg
run verify gnome
run show gnome
port="$("$OLDPWD/.venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
echo; echo "\$ persistkit serve gnome --port $port &"
"$OLDPWD/.venv/bin/persistkit" serve gnome --port "$port" --log-level warning &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if "$OLDPWD/.venv/bin/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/v2/health/ready')" 2>/dev/null; then
    break
  fi
  sleep 0.2
done
echo "\$ python examples/ask_server.py 127.0.0.1:$port gnome photo.jpg other.jpg   # tritonclient"
"$OLDPWD/.venv/bin/python" "$OLDPWD/examples/ask_server.py" "127.0.0.1:$port" gnome photo.jpg other.jpg
kill "$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
trap - EXIT
echo
echo "To try the upload page:  PERSISTKIT_STORE=$PERSISTKIT_STORE .venv/bin/persistkit serve gnome"
echo "then open http://127.0.0.1:8000/ and pick $work/photo.jpg"
