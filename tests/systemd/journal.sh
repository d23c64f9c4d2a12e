#!/bin/bash
# Logging for journald: when JOURNAL_STREAM names the daemons' stderr (as systemd sets it), each
# line starts with its priority (<3> error, <4> warning, <6> info, <7> debug), so that
# "journalctl -p warning" finds the warnings; without it, or naming another file, lines are plain.
. "$TOP_SRCDIR/tests/systemd/lib.sh"
plan 10

err="$tmp/err"
other="$tmp/other"
: > "$other"
# dev_ino FILE: FILE's device and inode the way systemd writes JOURNAL_STREAM.
dev_ino() { stat -L -c '%d:%i' "$1"; }

# fail_start STREAM: record-countd fails at start-up (its database cannot be opened), stderr in
# $err, JOURNAL_STREAM=STREAM (unset if empty); its exit status in $rc.
fail_start() {
    : > "$err"
    if [ -n "$1" ]; then
        JOURNAL_STREAM=$1 "$RECORD_COUNTD" --listen 127.0.0.1:0 --db "$tmp/missing/records.db" 2>"$err"
    else
        env -u JOURNAL_STREAM "$RECORD_COUNTD" --listen 127.0.0.1:0 --db "$tmp/missing/records.db" 2>"$err"
    fi
    rc=$?
    diag < "$err"
}
# plain_error: exit 1, and the error is the plain "record-countd: --db ..." line, no priority.
plain_error() {
    [ "$rc" -eq 1 ] && grep -q '^record-countd: --db ' "$err" && ! grep -q '^<' "$err"
}

# 1. Without JOURNAL_STREAM the line is what a terminal (and the integration tests) always saw.
fail_start ""
check "no JOURNAL_STREAM: the start-up error is a plain line" plain_error

# 2. JOURNAL_STREAM naming stderr (a file here): the error carries <3>.
fail_start "$(dev_ino "$err")"
check "JOURNAL_STREAM is stderr: the start-up error starts with <3>" \
    eval '[ "$rc" -eq 1 ] && grep -q "^<3>record-countd: --db " "$err"'

# 3-4. JOURNAL_STREAM naming another file, or not a DEV:INO pair: plain, as stderr is not the journal.
fail_start "$(dev_ino "$other")"
check "JOURNAL_STREAM is another file: plain line" plain_error
fail_start "$(dev_ino "$err")x"
check "JOURNAL_STREAM malformed: plain line" plain_error

# run_counterd STREAM: counterd up (unsafe strategy: a warning at start; debug: its health probes
# of an unreachable record-countd), then SIGTERM; stderr in $err, exit status checked for 0.
run_counterd() {
    local pid port
    : > "$err"
    port=$(free_port)
    if [ -n "$1" ]; then
        JOURNAL_STREAM=$1 "$COUNTERD" --socket "$tmp/counterd.sock" --server "http://127.0.0.1:$port" \
            --strategy unsafe --log-level debug 2>"$err" &
    else
        env -u JOURNAL_STREAM "$COUNTERD" --socket "$tmp/counterd.sock" --server "http://127.0.0.1:$port" \
            --strategy unsafe --log-level debug 2>"$err" &
    fi
    pid=$!
    cleanup_pids="$cleanup_pids $pid"
    # Up, and its first health probe has failed (a debug line).
    wait_for 10 eval 'grep -q "serving on" "$err" && grep -q "GET /healthz failed" "$err"' || return 1
    kill -TERM "$pid"
    exited_with "$pid" 0 10
}

# 5-7. Under the journal every line has its priority: <4> warning, <6> info, <7> debug.
if run_counterd "$(dev_ino "$err")"; then
    sed -n '1,6p' "$err" | diag
    check "counterd: the start-up warning starts with <4>" grep -q '^<4>counterd: --strategy unsafe' "$err"
    check "counterd: info starts with <6>, debug with <7>" \
        eval 'grep -q "^<6>counterd: serving on" "$err" && grep -q "^<7>counterd: GET /healthz failed" "$err"'
    check "counterd: every line carries a priority" eval '! grep -qv "^<[3467]>counterd: " "$err"'
else
    diag < "$err"
    for _ in 1 2 3; do notok "counterd did not start or stop under JOURNAL_STREAM"; done
fi

# 8. The same run without JOURNAL_STREAM: plain "counterd: " lines.
if run_counterd ""; then
    check "counterd without JOURNAL_STREAM: plain lines" eval '! grep -qv "^counterd: " "$err"'
else
    diag < "$err"
    notok "counterd did not start or stop without JOURNAL_STREAM"
fi

# 9-10. Usage errors under the journal carry <3> too (a bad value in a drop-in is the likeliest
# mistake under systemd), and counterd's is one line, not its whole --help.
: > "$err"
JOURNAL_STREAM=$(dev_ino "$err") RECORD_COUNTD_LATENCY=5 "$RECORD_COUNTD" --db "$tmp/x.db" 2>"$err"
rc=$?
diag < "$err"
check "record-countd: a bad RECORD_COUNTD_LATENCY is an error line with <3>, exit 2" \
    eval '[ "$rc" -eq 2 ] && grep -q "^<3>record-countd: RECORD_COUNTD_LATENCY" "$err" && ! grep -qv "^<3>" "$err"'
: > "$err"
JOURNAL_STREAM=$(dev_ino "$err") "$COUNTERD" --bogus 2>"$err"
rc=$?
diag < "$err"
check "counterd: an unknown option is one error line with <3>, exit 2" \
    eval '[ "$rc" -eq 2 ] && [ "$(wc -l < "$err")" -eq 1 ] && grep -q "^<3>counterd: unknown option" "$err"'

finish
