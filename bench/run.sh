#!/usr/bin/env bash
# The benchmark suite: builds CronBox and the bench tool (release), provisions private
# PostgreSQL/NATS (scripts/provision.sh) and runs every scenario on loopback.
#   bench/run.sh [--smoke] [--peer] [--scenarios w1,light,max,cron,scale,ingest] [...]
# --smoke: seconds-long sizes on a dev build (what CI runs). See bench/README.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/provision.sh
source scripts/provision.sh

profile=release
for arg in "$@"; do [[ $arg == --smoke ]] && profile=dev; done
if [[ $profile == release ]]; then
  cargo build --release -p cronbox -p cronbox-bench --bins
  dir=target/release
else
  cargo build -p cronbox -p cronbox-bench --bins
  dir=target/debug
fi
exec "$dir/cronbox-bench" --cronbox "$dir/cronbox" "$@"
