#!/usr/bin/env bash
# The PostgreSQL pass of the test suite: the same tests that run on SQLite
# (every one that goes through the store), on a throwaway PostgreSQL cluster
# on loopback, plus the PostgreSQL-only ones (LISTEN/NOTIFY).
#
#   scripts/test-postgres.sh [cargo test arguments...]
#
# With SMART_SUPPORT_TEST_POSTGRES_URL set (postgres://USER@HOST:PORT/DB of
# a server on which the tests may create databases) that server is used
# (and SMART_SUPPORT_TEST_POSTGRES_CA, the PEM file of the CA of its TLS
# certificate, for the TLS test);
# otherwise Debian's `postgresql` binaries start a cluster in a temporary
# directory (as the `postgres` user when run as root), with TLS from a test
# CA made here by openssl, stopped at the end.
# Without PostgreSQL the pass is skipped with a note, unless
# SMART_SUPPORT_REQUIRE_POSTGRES=1 (CI), which makes that a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# The suites whose tests use the store; the rest (models, kernels, the
# browser) do not depend on the backend.
SUITES=(api cli cluster concurrency copy desk hardening kb live mail pages recovery sla store users webhooks)

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/smart-support/target}"

if [ -z "${SMART_SUPPORT_TEST_POSTGRES_URL:-}" ]; then
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    if [ "${SMART_SUPPORT_REQUIRE_POSTGRES:-}" = 1 ]; then
      echo "PostgreSQL is required (SMART_SUPPORT_REQUIRE_POSTGRES=1) but not installed: apt-get install postgresql" >&2
      exit 1
    fi
    echo "skipping the PostgreSQL pass: PostgreSQL is not installed (apt-get install postgresql)" >&2
    exit 0
  fi
  tmp=$(mktemp -d /tmp/smart-support-pg.XXXXXX)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_owner() {
    if [ "$(id -u)" = 0 ]; then
      chown -R postgres "$tmp"
      runuser -u postgres -- "$@"
    else
      "$@"
    fi
  }
  as_owner "$bindir/initdb" -D "$tmp/data" -A trust -U postgres -E UTF8 >"$tmp/initdb.log" 2>&1 ||
    { cat "$tmp/initdb.log" >&2; exit 1; }
  # TLS on too (plain sessions stay allowed): a test CA and a certificate
  # for 127.0.0.1, so the TLS test checks a real chain.
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=smart-support test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$tmp/ca.key" -out "$tmp/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$tmp/server.key" -out "$tmp/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$tmp/server.ext"
  openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial \
    -days 2 -extfile "$tmp/server.ext" -out "$tmp/server.pem" 2>/dev/null
  chmod 600 "$tmp/server.key"
  # Durability is not what these tests are about: fsync off keeps them quick.
  as_owner "$bindir/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w \
    -o "-p $port -k $tmp -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 \
        -c ssl=on -c ssl_cert_file=$tmp/server.pem -c ssl_key_file=$tmp/server.key" start >/dev/null
  export SMART_SUPPORT_TEST_POSTGRES_CA="$tmp/ca.pem"
  stop() {
    as_owner "$bindir/pg_ctl" -D "$tmp/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$tmp"
  }
  trap stop EXIT
  export SMART_SUPPORT_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (throwaway cluster in $tmp)"
fi

args=()
for s in "${SUITES[@]}"; do args+=(--test "$s"); done
SMART_SUPPORT_TEST_DB=postgres cargo test --locked "${args[@]}" "$@"
