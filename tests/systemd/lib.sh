# lib.sh: TAP output, temp dirs, polling and clean-up for the tests in tests/systemd.
# Sourced by bash; every test sets "plan N" first and calls "finish" last.

TOP_SRCDIR=${TOP_SRCDIR:-.}
TOP_BUILDDIR=${TOP_BUILDDIR:-.}
PYTHON3=${PYTHON3:-/usr/bin/python3}
CURL=${CURL:-curl}
RECORD_COUNTD=${RECORD_COUNTD:-$TOP_BUILDDIR/server/record-countd}
COUNTERD=${COUNTERD:-$TOP_BUILDDIR/client/counterd}
here="$TOP_SRCDIR/tests/systemd"

tap_n=0
tap_failed=0
tap_planned=0
cleanup_pids=""

plan() { tap_planned=$1; echo "1..$1"; }
ok() { tap_n=$((tap_n + 1)); echo "ok $tap_n - $*"; }
notok() { tap_n=$((tap_n + 1)); tap_failed=$((tap_failed + 1)); echo "not ok $tap_n - $*"; }
diag() { sed 's/^/# /'; }
# check DESCRIPTION COMMAND...: one TAP line from a command's exit status.
check() { local d=$1; shift; if "$@"; then ok "$d"; else notok "$d"; fi; }
# Report every planned line that was not reached (an early failure must not shrink the plan).
finish() {
    while [ "$tap_n" -lt "$tap_planned" ]; do notok "${1:-not reached}"; done
    [ "$tap_failed" -eq 0 ]
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lockstep-systemd.XXXXXX")
cleanup() {
    local p
    for p in $cleanup_pids; do
        kill -TERM "$p" 2>/dev/null
    done
    for p in $cleanup_pids; do
        # Give each a moment to exit on SIGTERM, then make sure.
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$p" 2>/dev/null
    done
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# wait_for SECONDS COMMAND...: poll COMMAND every 20 ms until it succeeds; 1 on timeout.
wait_for() {
    local deadline=$(( $(date +%s%N) / 1000000 + ${1%.*} * 1000 )); shift
    while ! "$@"; do
        [ $(( $(date +%s%N) / 1000000 )) -ge "$deadline" ] && return 1
        sleep 0.02
    done
}

# free_port: a TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
    "$PYTHON3" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# notify_listen PATH: a datagram socket at PATH that collects sd_notify messages, one per line, in PATH.log.
notify_listen() {
    "$PYTHON3" "$here/notify-listen.py" "$1" "$1.log" </dev/null >/dev/null 2>&1 &
    cleanup_pids="$cleanup_pids $!"
    wait_for 10 test -S "$1"
}

# notified PATH LINE: the listener at PATH got LINE (a whole assignment, e.g. READY=1).
notified() { grep -qxF -- "$2" "$1.log" 2>/dev/null; }
notified_prefix() { grep -q "^$2" "$1.log" 2>/dev/null; }
notified_count() { grep -cxF -- "$2" "$1.log" 2>/dev/null; }

# exited_with PID STATUS TIMEOUT: wait for a child to exit and compare its status.
exited_with() {
    local pid=$1 want=$2 t=$3 st
    wait_for "$t" eval '! kill -0 '"$pid"' 2>/dev/null' || return 1
    wait "$pid"; st=$?
    echo "exit status $st" | diag
    [ "$st" -eq "$want" ]
}
