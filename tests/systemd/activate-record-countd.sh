#!/bin/bash
# record-countd under real socket activation (systemd-socket-activate): it serves the passed socket,
# says READY=1, STATUS= and WATCHDOG=1 on NOTIFY_SOCKET, keeps its database in $STATE_DIRECTORY,
# and on SIGTERM says STOPPING=1 and exits 0.
. "$TOP_SRCDIR/tests/systemd/lib.sh"
plan 9

port=$(free_port)
notify="$tmp/notify.sock"
state="$tmp/state"
mkdir -p "$state"
notify_listen "$notify" || { echo "notify listener did not start" | diag; finish "setup failed"; exit 1; }

if [ ! -x "$RECORD_COUNTD" ]; then
    echo "no record-countd binary at $RECORD_COUNTD" | diag
    finish "record-countd not built"; exit 1
fi

# systemd-socket-activate binds, waits for the first connection, then execs the daemon in its own
# pid; so $! is the daemon's pid (WATCHDOG_PID) and the first request is served by the daemon.
(cd "$tmp" && exec systemd-socket-activate -l "127.0.0.1:$port" --fdname=http \
    -E NOTIFY_SOCKET="$notify" -E WATCHDOG_USEC=300000 -E STATE_DIRECTORY="$state" \
    -E WATCHDOG_PID=$BASHPID \
    "$RECORD_COUNTD" --latency 20ms --log-level info) 2> "$tmp/daemon.log" &
pid=$!
cleanup_pids="$pid $cleanup_pids"

if ! wait_for 10 grep -q "Listening on" "$tmp/daemon.log"; then
    diag < "$tmp/daemon.log"
fi

# 1. The first request goes through the socket systemd-socket-activate made, and is recorded.
body=$("$CURL" -sS --max-time 20 "http://127.0.0.1:$port/record-count?value=7&client=sd" 2>&1)
echo "$body" | diag
check "a request on the activated socket is recorded" \
    "$PYTHON3" -c 'import json,sys; r = json.loads(sys.argv[1]); sys.exit(not (r["value"] == 7 and r["client"] == "sd"))' "$body"

# 2-4. sd_notify messages.
check "READY=1 is sent" wait_for 10 notified "$notify" READY=1
check "a STATUS= line is sent" wait_for 5 notified_prefix "$notify" STATUS=
check "the watchdog is kept alive (WATCHDOG=1 twice within a second or so)" \
    wait_for 5 eval '[ "$(notified_count "$notify" WATCHDOG=1)" -ge 2 ]'

# 5. Without --db, the database lives in $STATE_DIRECTORY.
check "database defaults to \$STATE_DIRECTORY/records.db" test -s "$state/records.db"

# 6. It still answers a second connection (the passed socket keeps listening).
check "a second connection is served" \
    eval '"$CURL" -sS --max-time 20 -o /dev/null -w "%{http_code}" "http://127.0.0.1:$port/healthz" | grep -qx 200'

# 7-8. SIGTERM: STOPPING=1, exit 0.
kill -TERM "$pid" 2>/dev/null
check "STOPPING=1 is sent after SIGTERM" wait_for 20 notified "$notify" STOPPING=1
check "exit status 0 after SIGTERM" exited_with "$pid" 0 20

# 9. What was acknowledged is durable: a restart by hand on the same database still has it.
port2=$(free_port)
"$RECORD_COUNTD" --listen "127.0.0.1:$port2" --db "$state/records.db" --latency 0 2>> "$tmp/daemon2.log" &
pid2=$!
cleanup_pids="$pid2 $cleanup_pids"
wait_for 20 eval '"$CURL" -sf -o /dev/null "http://127.0.0.1:$port2/healthz"'
body=$("$CURL" -sS --max-time 20 "http://127.0.0.1:$port2/clients/sd" 2>&1)
echo "$body" | diag
check "the record survives, and the same binary runs by hand without systemd" \
    "$PYTHON3" -c 'import json,sys; r = json.loads(sys.argv[1]); sys.exit(not (r["last_value"] == 7 and r["recorded"] == 1))' "$body"

if [ "$tap_failed" -gt 0 ]; then
    echo "--- daemon log" | diag; diag < "$tmp/daemon.log"
    echo "--- notify messages ($(notified_count "$notify" WATCHDOG=1) WATCHDOG=1 not shown)" | diag
    grep -vxF WATCHDOG=1 "$notify.log" 2>/dev/null | diag
fi
finish
