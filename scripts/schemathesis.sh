#!/usr/bin/env bash
# Bad input measured by a tool nobody here wrote: schemathesis fuzzes CronBox's API from its own
# OpenAPI document (/v1/openapi.json) with a workspace key, and fails on any 5xx or any status
# code the document does not list. Afterwards every projection must have caught up with nothing
# quarantined (the fuzzer sends NUL bytes, binary and huge values).
#   scripts/schemathesis.sh [path to the cronbox binary]   (default target/debug/cronbox)
# Needs the CRONBOX_* variables of scripts/provision.sh (scripts/test.sh sources it). Bounded:
# a few hundred cases per operation group, at most CRONBOX_FUZZ_SECONDS (default 300) in all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${1:-target/debug/cronbox}
venv=${CRONBOX_HOME:?source scripts/provision.sh first}/venv
spec=${CRONBOX_SCHEMATHESIS_PIP_SPEC:-schemathesis==4.32.5}
log() { printf 'schemathesis.sh: %s\n' "$*" >&2; }

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "${spec##*==}"; then
  log "installing $spec into $venv (log: $CRONBOX_HOME/pip.log)"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$spec" >>"$CRONBOX_HOME/pip.log" 2>&1
fi

tag=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
db="cbx_fuzz_$tag"
admin=$CRONBOX_TEST_DATABASE_URL
export CRONBOX_DATABASE_URL="${admin%/*}/$db"
work=$(mktemp -d "${TMPDIR:-/tmp}/cronbox-fuzz.XXXXXX")
free_port() { "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nats_port=$(free_port)
api_port=$(free_port)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -X -q "$admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

psql -X -q "$admin" -c "CREATE DATABASE $db" >/dev/null
# A nats-server of its own in operator mode, as in production (event subscriptions work), so
# nothing of this run is left in the suite's server.
"$bin" nats init --dir "$work/auth" >/dev/null
printf 'host: 127.0.0.1\nport: %s\ninclude auth.conf\njetstream { store_dir: "%s" }\n' \
  "$nats_port" "$work/js" >"$work/auth/server.conf"
"$CRONBOX_NATS_SERVER_BIN" -c "$work/auth/server.conf" >"$work/nats.log" 2>&1 &
pids+=($!)
export CRONBOX_NATS_URL=nats://127.0.0.1:$nats_port
export CRONBOX_NATS_CREDS=$work/auth/cronbox.creds
CRONBOX_NATS_ACCOUNT_SEED=$(cat "$work/auth/account.seed")
export CRONBOX_NATS_ACCOUNT_SEED
# Enough hashing slots: a 503 busy would be the load, not the input.
export CRONBOX_PASSWORD_HASH_CONCURRENCY=8
export CRONBOX_NATS_PREFIX=fuzz CRONBOX_LISTEN=127.0.0.1:$api_port CRONBOX_RATE_LIMIT=0
# Open targets: no DNS lookups of fuzzed host names (the API role alone makes no calls at all).
export CRONBOX_ALLOW_PRIVATE_TARGETS=1 RUST_LOG=${RUST_LOG:-warn}
export CRONBOX_SECRETS_KEY=5c0ffee05c0ffee05c0ffee05c0ffee05c0ffee05c0ffee05c0ffee05c0ffee0
for _ in $(seq 100); do (: <>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break; sleep 0.1; done
ws_json=$("$bin" workspace create --name fuzz --plan business --json)
CRONBOX_FUZZ_WS=$("$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["workspace_id"])' <<<"$ws_json")
CRONBOX_FUZZ_KEY=$("$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["api_key"])' <<<"$ws_json")
export CRONBOX_FUZZ_WS CRONBOX_FUZZ_KEY
# The API (with the projections), no dispatcher or executor: nothing the fuzzer creates is called.
"$bin" api >"$work/api.log" 2>&1 &
pids+=($!)
base=http://127.0.0.1:$api_port
for _ in $(seq 300); do
  [[ $(exec 3<>"/dev/tcp/127.0.0.1/$api_port" && printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3 && head -c 12 <&3) == *200* ]] 2>/dev/null && break
  sleep 0.1
done

status=0
log "fuzzing $base/v1/openapi.json (workspace $CRONBOX_FUZZ_WS)"
timeout "${CRONBOX_FUZZ_SECONDS:-300}" "$venv/bin/schemathesis" --config-file scripts/schemathesis/schemathesis.toml \
  run "$base/v1/openapi.json" --phases examples,coverage,fuzzing --no-color \
  --report junit --report-junit-path "target/schemathesis/junit.xml" || status=$?
if ((status != 0)); then
  log "schemathesis found problems (exit $status); the API's log: $work/api.log (tail below)"
  tail -n 40 "$work/api.log" >&2 || true
fi

# Whatever the fuzzer stored, the read models keep up and nothing is quarantined.
caught_up=0
for _ in $(seq 60); do
  if "$bin" projections status --json 2>/dev/null | "$venv/bin/python" -c '
import json, sys
s = json.load(sys.stdin)
bad = [p for p in s if p["lag_events"] or p["quarantined"] or p["parked"]]
sys.exit(1 if bad else 0)'; then
    caught_up=1
    break
  fi
  sleep 0.5
done
if ((!caught_up)); then
  log "projections did not catch up cleanly after the fuzzing:"
  "$bin" projections status >&2 || true
  "$bin" projections failures >&2 || true
  status=1
fi
exit "$status"
