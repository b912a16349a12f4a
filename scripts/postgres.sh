#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests of database-backed stores.
#
#   bash scripts/postgres.sh start   # initdb + start on a free loopback port; prints the URL
#   bash scripts/postgres.sh url     # the URL of the running server
#   bash scripts/postgres.sh stop    # stop it and delete its data
#
# Works as root (the server runs as the 'postgres' user, through runuser) or as a plain user.
# Uses Debian's binaries in /usr/lib/postgresql/<major>/bin (or pg_config's); when there are
# none and apt-get is there, installs the 'postgresql' package first. Data, socket and log
# live in $PERSISTKIT_PG_DIR (default /tmp/persistkit-pg). fsync is off: test data only.
set -euo pipefail
DIR="${PERSISTKIT_PG_DIR:-/tmp/persistkit-pg}"
DB="persistkit_test"

find_bin() {
  local found
  found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -z "$found" ] && command -v pg_config >/dev/null 2>&1; then
    found="$(pg_config --bindir)"
  fi
  if [ -z "$found" ] || [ ! -x "$found/initdb" ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      echo "installing postgresql with apt-get ..." >&2
      timeout 600 apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq postgresql >&2
      found="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    else
      echo "error: no PostgreSQL binaries (hint: apt-get install postgresql)" >&2
      exit 1
    fi
  fi
  echo "$found"
}

as_server() {  # run a command as the user that owns the server
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

url() {
  [ -f "$DIR/port" ] || { echo "error: no server started (hint: $0 start)" >&2; exit 1; }
  echo "postgresql://postgres@127.0.0.1:$(cat "$DIR/port")/$DB"
}

start() {
  local bin port
  bin="$(find_bin)"
  if [ -f "$DIR/port" ] && as_server "$bin/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
    url
    return
  fi
  rm -rf "$DIR"
  mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$DIR"
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  as_server "$bin/initdb" -D "$DIR/data" -U postgres -A trust --no-sync -E UTF8 >"$DIR/initdb.log" 2>&1 \
    || { cat "$DIR/initdb.log" >&2; exit 1; }
  as_server "$bin/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
    -o "-p $port -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
    start >/dev/null || { cat "$DIR/server.log" >&2; exit 1; }
  as_server "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$DB"
  echo "$port" >"$DIR/port"
  url
}

stop() {
  local bin
  [ -d "$DIR/data" ] || return 0
  bin="$(find_bin)"
  as_server "$bin/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) url ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
