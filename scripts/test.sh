#!/usr/bin/env bash
# The one command that runs CronBox's whole test suite against private
# PostgreSQL/NATS servers (see scripts/provision.sh).
#   scripts/test.sh [cargo args] [-- test-binary args]
# Env: CRONBOX_TEST_THREADS (default 6: on two cores, eight stacks at once made the tests that
# bound lateness to a second fail now and then), CRONBOX_* from provision.sh.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/provision.sh
source scripts/provision.sh

# The web app's browser tests drive Debian's Chromium over WebDriver (tests/integration/common/
# browser.rs); install it when missing (this needs root, as on CI's machine).
if ! command -v chromedriver >/dev/null 2>&1 || [[ ! -x /usr/bin/chromium ]]; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium and chromium-driver for the browser tests" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }
  else
    echo "the browser tests need Chromium: apt-get install chromium chromium-driver" >&2
  fi
fi
export CRONBOX_CHROMEDRIVER=${CRONBOX_CHROMEDRIVER:-$(command -v chromedriver || echo /usr/bin/chromedriver)}
export CRONBOX_CHROMIUM=${CRONBOX_CHROMIUM:-/usr/bin/chromium}

# Tests point webhooks at local servers, which production code refuses.
export CRONBOX_ALLOW_PRIVATE_TARGETS=1
export RUST_LOG=${RUST_LOG:-warn}
threads=${CRONBOX_TEST_THREADS:-6}

# `--workspace` together with -p/--package would override the user's choice.
scope=(--workspace)
for arg in "$@"; do
  [[ $arg == -- ]] && break
  case $arg in -p | --package | --package=* | -p?*) scope=() ;; esac
done

status=0
if cargo nextest --version >/dev/null 2>&1; then
  if [[ $# -eq 0 ]]; then
    # The browser journeys run after everything else, two at a time: beside the tests that
    # bound a run's lateness to a second, a few Chromiums on two cores made those late.
    journeys='test(/^web::journey/)'
    cargo nextest run "${scope[@]}" --no-fail-fast --test-threads "$threads" -E "not $journeys" || status=$?
    cargo nextest run --test integration --no-fail-fast --test-threads 2 -E "$journeys" || status=$?
  else
    cargo nextest run "${scope[@]}" --no-fail-fast --test-threads "$threads" "$@" || status=$?
  fi
else
  # cargo test: our args go before `--`, libtest args after it.
  cargo_args=() harness_args=()
  seen_sep=0
  for arg in "$@"; do
    if ((seen_sep)); then
      harness_args+=("$arg")
    elif [[ $arg == -- ]]; then
      seen_sep=1
    else
      cargo_args+=("$arg")
    fi
  done
  cargo test "${scope[@]}" --all-targets "${cargo_args[@]}" -- \
    --test-threads="$threads" "${harness_args[@]}" || status=$?
fi
# The whole suite (no filter given) ends with the seconds-long smoke run of the benchmarks, so
# the benchmark tool and every scenario's code path stay working (the figures are not checked),
# and with the schemathesis run (scripts/schemathesis.sh).
if [[ $# -eq 0 ]]; then
  bash bench/run.sh --smoke >/dev/null || status=$?
  # Then a bounded fuzzing run of the API from its own OpenAPI document (schemathesis, PyPI):
  # no 5xx, no undocumented status, and the read models keep up with whatever it stored.
  bash scripts/schemathesis.sh target/debug/cronbox || status=$?
fi
exit "$status"
