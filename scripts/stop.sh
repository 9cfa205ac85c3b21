#!/usr/bin/env bash
# Stops the private PostgreSQL and nats-server started by scripts/provision.sh.
# Data stays in $CRONBOX_HOME; the next provision.sh run restarts from it.
set -euo pipefail

# --no-provision: only load the functions, don't start anything first.
# shellcheck source=scripts/provision.sh
source "$(dirname "${BASH_SOURCE[0]}")/provision.sh" --no-provision
cronbox_stop_services
