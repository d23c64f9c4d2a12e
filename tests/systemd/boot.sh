#!/bin/bash
# The documented install under a real systemd as PID 1: a container (systemd-nspawn) boots this
# machine's /usr with a copy of /etc, runs "make install" from this build tree, then the steps of
# docs/systemd.md (systemd-sysusers, daemon-reload, enable --now both sockets), and checks what a
# user relies on: the installed daemons start, counterctl gets numbers as root and as a member of
# the lockstep group (not as anyone else), a drop-in sets an option, the watchdog is fed, a killed
# record-countd is restarted with its records kept, an online backup restores, journald gets the
# log priorities, and both services stop with status 0.
# Needs root and systemd-nspawn (package systemd-container); otherwise the whole file is skipped.
. "$TOP_SRCDIR/tests/systemd/lib.sh"

skip_all() { echo "1..0 # SKIP $*"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip_all "needs root to boot a container"
command -v systemd-nspawn >/dev/null 2>&1 || skip_all "systemd-nspawn is not installed (package systemd-container)"
[ -x /lib/systemd/systemd ] || skip_all "systemd is not installed"
prefix=$(sed -n 's/^prefix = //p' "$TOP_BUILDDIR/Makefile" 2>/dev/null)
[ "$prefix" = /usr/local ] || skip_all "installs into the container only with the default prefix /usr/local (this build's: $prefix)"
plan 17

root="$tmp/root"
upper="$tmp/usr"
log="$tmp/nspawn.log"
name="lockstep-boot-$$"
mounted_run=

# The container's root (booted to basic.target, so none of the host's own services starts):
# this machine's /usr under a writable overlay (make install writes
# /usr/local there), a copy of /etc without lockstep's units enabled or an fstab, and empty
# mount points; nothing of the host is changed.
mkdir -p "$root" "$upper"
for d in bin lib lib64 sbin; do [ -L "/$d" ] && ln -s "usr/$d" "$root/$d"; done
mkdir -p "$root"/{usr,dev,proc,sys,run,tmp,var,root,home}
cp -a /etc "$root/etc"
rm -f "$root/etc/os-release" "$root/etc/machine-id"
cp /usr/lib/os-release "$root/etc/os-release"
: > "$root/etc/fstab"
rm -rf "$root"/etc/systemd/system/*/record-countd.* "$root"/etc/systemd/system/*/counterd.* \
    "$root"/etc/systemd/system/record-countd.* "$root"/etc/systemd/system/counterd.*

# systemd-nspawn keeps its propagation directory under /run/systemd/nspawn and refuses to clean
# it up on a disk file system (a machine whose PID 1 is not systemd may have /run on disk).
if [ "$(stat -f -c %T /run)" != tmpfs ] && ! mountpoint -q /run/systemd/nspawn; then
    mkdir -p /run/systemd/nspawn && mount -t tmpfs -o mode=0755 tmpfs /run/systemd/nspawn && mounted_run=1
fi

binds=(--bind="$TOP_BUILDDIR")
[ "$TOP_SRCDIR" -ef "$TOP_BUILDDIR" ] || binds+=(--bind-ro="$TOP_SRCDIR")
systemd-nspawn --quiet --register=no --keep-unit --private-network -M "$name" -D "$root" \
    --overlay=/usr:"$upper":/usr "${binds[@]}" -b systemd.unit=basic.target > "$log" 2>&1 &
nspawn=$!
cleanup_pids="$nspawn $cleanup_pids"
init=
find_init() { init=$(pgrep -P "$nspawn" -x systemd | head -1); [ -n "$init" ]; }
in_ct() { nsenter -t "$init" -a "$@"; }
booted() { local s; s=$(in_ct systemctl is-system-running 2>/dev/null); [ "$s" = running ] || [ "$s" = degraded ]; }
stop_container() {
    [ -n "$init" ] && kill -RTMIN+4 "$init" 2>/dev/null      # systemd: power off
    wait_for 30 eval '! kill -0 '"$nspawn"' 2>/dev/null'
    [ -n "$mounted_run" ] && umount /run/systemd/nspawn 2>/dev/null
}
trap 'stop_container; cleanup' EXIT

if ! wait_for 30 find_init || ! wait_for 60 booted; then
    echo "the container did not boot" | diag; { tail -n 30 "$log"; echo; } | diag
    [ -n "$init" ] && in_ct systemctl list-jobs --no-pager 2>&1 | diag
    finish "container did not boot"; exit 1
fi
ok "systemd boots as PID 1 in a container of this machine"
in_ct ldconfig    # the container's linker cache holds what its /usr has before make install

# 2. make install as the docs say, as root: the installed counterd finds libdfr.so.
in_ct env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$TOP_BUILDDIR" -s install > "$tmp/install.log" 2>&1
rc=$?
[ "$rc" -eq 0 ] || tail -n 20 "$tmp/install.log" | diag
out=$(in_ct /usr/local/sbin/counterd --version 2>&1)
echo "$out" | diag
check "make install: the installed counterd runs (libdfr.so.0 is found)" test "$rc" -eq 0 -a -n "$out" \
    -a "${out#*cannot open shared}" = "$out"

# 3. A program of a libdfr user: examples/counter-locked.c built against the installed library with
# pkg-config, as README.md and libdfr(3) say, and run without any path set (with the sanitizers
# of a sanitizer build, whose libdfr needs them).
san=$(sed -n 's/^SAN_CFLAGS = *//p' "$TOP_BUILDDIR/Makefile")
ex="$TOP_SRCDIR/examples"
built() {
    in_ct sh -c 'cc $2 -o /tmp/counter-locked "$1/counter-locked.c" "$1/fake-record.c" \
        $(pkg-config --cflags --libs libdfr libevent)' sh "$ex" "$san" > "$tmp/cc.log" 2>&1
    local rc=$?
    diag < "$tmp/cc.log"
    [ "$rc" -eq 0 ] && [ "$(in_ct /tmp/counter-locked)" = $'1 d1\n2 d2' ]
}
check "a program built with pkg-config against the installed libdfr runs (1 d1, 2 d2)" built

# A sanitizer build's daemons run in the units' sandbox as they are, but LeakSanitizer's exit check
# needs ptrace, which SystemCallFilter forbids: it is off here (the other tests check leaks).
if [ -n "$san" ]; then
    for u in record-countd counterd; do
        in_ct mkdir -p /etc/systemd/system/$u.service.d
        printf '[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0\n' |
            in_ct tee /etc/systemd/system/$u.service.d/asan.conf > /dev/null
    done
fi

# 4. The steps of docs/systemd.md.
steps() {
    { in_ct systemd-sysusers && in_ct systemctl daemon-reload &&
        in_ct systemctl enable --now record-countd.socket counterd.socket; } > "$tmp/steps.log" 2>&1
    local rc=$?
    diag < "$tmp/steps.log"
    return $rc
}
check "systemd-sysusers, daemon-reload, enable --now both sockets" steps

sock=/run/lockstep/counterd.sock
ctl() { in_ct "$@" /usr/local/bin/counterctl --socket "$sock" next 2>&1; }
# 5. The first number starts counterd (socket activation), which starts record-countd.
out=$(ctl)
echo "counterctl: $out" | diag
check "counterctl next as root gives 1 through both socket-activated services" test "$out" = 1
active() { [ "$(in_ct systemctl is-active "$@" | sort -u)" = active ]; }
check "both services are active" active record-countd.service counterd.service
reachable() { status=$(in_ct systemctl show -P StatusText counterd.service); [ "${status#*reachable}" != "$status" ]; }
wait_for 10 reachable
echo "counterd STATUS: $status" | diag
check "counterd says record-countd is reachable (STATUS=)" test "${status#*reachable}" != "$status"

# 8-9. The socket's group: a member gets numbers, anyone else a clear refusal.
in_ct useradd -M -G lockstep member && in_ct useradd -M outsider
out=$(ctl runuser -u member --)
echo "member: $out" | diag
check "a member of group lockstep gets the next number" test "$out" = 2
out=$(ctl runuser -u outsider --); rc=$?
echo "outsider ($rc): $out" | diag
check "anyone else is refused with a message naming the group" test "$rc" -ne 0 -a "${out#*Permission denied*group lockstep}" != "$out"

# 10. The watchdog is fed: its timestamp moves on (WatchdogSec=10s, pinged every 5 s or sooner).
wd() { in_ct systemctl show -P WatchdogTimestampMonotonic "$1"; }
w1=$(wd record-countd.service); w2=$(wd counterd.service)
fed() { [ "$(wd record-countd.service)" != "$w1" ] && [ "$(wd counterd.service)" != "$w2" ]; }
check "both services feed the watchdog" wait_for 8 fed

# 11. A drop-in sets an option (the example of docs/systemd.md), and the restart takes it.
in_ct mkdir -p /etc/systemd/system/record-countd.service.d
printf '[Service]\nEnvironment=RECORD_COUNTD_LATENCY=250ms RECORD_COUNTD_ACCESS_LOG=1\n' |
    in_ct tee /etc/systemd/system/record-countd.service.d/latency.conf > /dev/null
in_ct systemctl daemon-reload && in_ct systemctl restart record-countd.service
ctl > /dev/null
started=$(in_ct journalctl -b -o cat -u record-countd.service | grep 'latency ' | tail -1)
echo "$started" | diag
check "a drop-in's RECORD_COUNTD_LATENCY=250ms is used" test "${started#*latency 250ms}" != "$started"

# 12. SIGKILL: Restart=on-failure starts it again and the records are in $STATE_DIRECTORY.
before=$(in_ct curl -s http://127.0.0.1:8080/stats)
in_ct systemctl kill -s KILL record-countd.service
restarted() { [ "$(in_ct systemctl show -P NRestarts record-countd.service)" = 1 ] && active record-countd.service; }
wait_for 15 restarted
after=$(in_ct curl -s http://127.0.0.1:8080/clients/"$(in_ct hostname)":default)
echo "before: $before" | diag; echo "after restart: $after" | diag
check "a killed record-countd is restarted and keeps its 3 records" test "${after#*\"recorded\":3}" != "$after"

# 13. The next number continues from there.
out=$(ctl)
check "counterctl next after the restart gives 4" test "$out" = 4

# 14. Backup and restore as docs/systemd.md says: sqlite3's online backup of the live database, one
# more record, then the copy put back with the service stopped: the service starts on it (owned by
# root now, in a DynamicUser= state directory) with the four records of the backup.
db=/var/lib/record-countd/records.db
cid=$(in_ct hostname):default
restored() {
    in_ct sqlite3 "$db" ".backup /root/records.backup" &&
        [ "$(ctl)" = 5 ] &&
        in_ct systemctl stop record-countd.socket record-countd.service 2> /dev/null &&
        in_ct cp /root/records.backup "$db" && in_ct rm -f "$db-wal" "$db-shm" &&
        in_ct systemctl start record-countd.socket &&
        after=$(in_ct curl -s "http://127.0.0.1:8080/clients/$cid") &&
        echo "after restore: $after" | diag &&
        [ "${after#*\"last_value\":4,\"recorded\":4}" != "$after" ] && active record-countd.service &&
        rec=$(in_ct curl -s "http://127.0.0.1:8080/record-count?value=5&client=$cid") &&
        echo "record 5 again: $rec" | diag && [ "${rec#*\"duplicate\":false}" != "$rec" ]
}
check "an online backup restored with the service stopped is served and written (4 records, then 5)" restored

# 15. systemctl stop (with its socket, or the next probe would start it again): record-countd exits
# 0 on SIGTERM and systemd records success.
stopped_ok() {
    in_ct systemctl stop "$@" 2> /dev/null &&
        [ "$(in_ct systemctl show -P Result "${@: -1}")" = success ] &&
        [ "$(in_ct systemctl show -P ExecMainStatus "${@: -1}")" = 0 ]
}
check "systemctl stop record-countd: status 0" stopped_ok record-countd.socket record-countd.service

# 16. Priorities reach journald: counterd's warning that record-countd is gone is shown by
# "journalctl -p warning", its info line that it was reachable only without -p.
jc() { in_ct journalctl -b -u counterd.service -o cat "$@"; }
warned() { jc -p warning | grep -q "record-countd is unreachable"; }
prio_ok() {
    wait_for 10 warned && ! jc -p warning | grep -q "record-countd is reachable" &&
        jc | grep -q "record-countd is reachable"
}
check "journalctl -p warning shows counterd's warning and not its info lines" prio_ok

# 17. counterd, with nothing in flight, exits 0 on SIGTERM too.
check "systemctl stop counterd: status 0" stopped_ok counterd.socket counterd.service

in_ct journalctl -b -o short-monotonic -u record-countd.service -u counterd.service > "$tmp/journal" 2>&1
[ "$tap_failed" -eq 0 ] || diag < "$tmp/journal"
finish
