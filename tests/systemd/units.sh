#!/bin/bash
# The installed units: systemd-analyze verify says nothing, the services' exposure is at most 2.0,
# their man pages exist, the sysusers.d file creates the group counterd's socket uses, the drop-in
# examples of the units, docs and man pages are valid, and make install stays under the prefix.
. "$TOP_SRCDIR/tests/systemd/lib.sh"
plan 18

units="record-countd.service record-countd.socket counterd.service counterd.socket"
gen="$TOP_BUILDDIR/systemd"
u="$tmp/units"
mkdir -p "$u"

# 1. The generated units carry absolute paths and no template left-overs.
bad=
for f in $units; do
    [ -f "$gen/$f" ] || { bad="$bad $f(missing)"; continue; }
    grep -q '@[a-z_]*@' "$gen/$f" && bad="$bad $f(@var@)"
done
for f in record-countd counterd; do
    grep -q "^ExecStart=/.*/$f " "$gen/$f.service" || bad="$bad $f.service(ExecStart)"
done
[ -z "$bad" ] && ok "generated units are complete, ExecStart is absolute" || notok "generated units:$bad"

# Copies for verify: ExecStart points at the binaries just built (verify needs them to exist).
for f in $units; do
    sed -e "s|^ExecStart=[^ ]*/record-countd |ExecStart=$RECORD_COUNTD |" \
        -e "s|^ExecStart=[^ ]*/counterd |ExecStart=$COUNTERD |" "$gen/$f" > "$u/$f" 2>/dev/null
done

# verify_quiet FILES...: systemd-analyze verify exits 0 on unknown keys, so any output is a failure.
verify_quiet() {
    local out rc
    out=$(cd "$u" && systemd-analyze verify --man=no "$@" 2>&1); rc=$?
    [ -n "$out" ] && printf '%s\n' "$out" | diag
    [ "$rc" -eq 0 ] && [ -z "$out" ]
}
# 2-3. Each daemon's pair of units, and all four together.
check "verify record-countd.service and .socket: no output" verify_quiet record-countd.socket record-countd.service
check "verify all four units together: no output" verify_quiet $units

# 4. The check itself catches a bad key (it would be silent on a broken checker).
cp "$u/counterd.service" "$u/broken.service"
echo "ProtectEverything=yes" >> "$u/broken.service"
if verify_quiet broken.service >/dev/null 2>&1; then notok "verify reports an unknown key"; else ok "verify reports an unknown key"; fi
rm -f "$u/broken.service"

# security_ok UNIT: offline exposure at most 2.0 (threshold is in tenths).
security_ok() {
    local out rc
    out=$(cd "$u" && systemd-analyze security --offline=yes --threshold=20 --no-pager "$1" 2>&1); rc=$?
    printf '%s\n' "$out" | grep -E 'Overall exposure|✗' | diag
    [ "$rc" -eq 0 ] && printf '%s\n' "$out" | grep -q 'Overall exposure level'
}
# 5-6. Each service.
check "record-countd.service exposure <= 2.0" security_ok record-countd.service
check "counterd.service exposure <= 2.0" security_ok counterd.service

# 7. An unhardened copy fails the same threshold (so the check can fail).
grep -vE '^(DynamicUser|ProtectSystem|ProtectHome|PrivateTmp|PrivateDevices|CapabilityBoundingSet|SystemCallFilter|RestrictAddressFamilies|IPAddress)' \
    "$u/counterd.service" > "$u/weak.service"
if security_ok weak.service >/dev/null 2>&1; then notok "an unhardened copy fails the threshold"; else ok "an unhardened copy fails the threshold"; fi

# 8-10. What the units promise.
has() { grep -qxF -- "$2" "$u/$1"; }
check "record-countd.socket listens on 127.0.0.1:8080 with a FileDescriptorName" \
    eval 'has record-countd.socket ListenStream=127.0.0.1:8080 && grep -q "^FileDescriptorName=" "$u/record-countd.socket"'
check "counterd.socket is /run/lockstep/counterd.sock, 0660, group lockstep, outside RuntimeDirectory" \
    eval 'has counterd.socket ListenStream=/run/lockstep/counterd.sock && has counterd.socket SocketMode=0660 &&
          has counterd.socket SocketGroup=lockstep && has counterd.service RuntimeDirectory=counterd'
notify_units() {
    local s
    for s in record-countd counterd; do
        has $s.service Type=notify && grep -q "^WatchdogSec=[1-9]" "$u/$s.service" && has $s.service Requires=$s.socket || return 1
    done
}
check "both services are Type=notify with a watchdog and socket activation" notify_units

# 11. Every man page a unit names exists in man/.
missing=
for page in $(sed -n 's/^Documentation=//p' "$u"/* | tr ' ' '\n' | sed -n 's/^man://p' | sort -u); do
    name=${page%%(*}; sect=${page#*(}; sect=${sect%)}
    [ -f "$TOP_SRCDIR/man/$name.$sect" ] || missing="$missing $page"
done
[ -z "$missing" ] && ok "every Documentation= man page exists" || notok "Documentation= pages missing:$missing"

# 12-13. The sysusers.d file, applied to an empty root, creates the socket's group and says nothing.
root="$tmp/root"
mkdir -p "$root/usr/lib/sysusers.d" "$root/etc"
cp "$TOP_SRCDIR/systemd/sysusers.d/lockstep.conf" "$root/usr/lib/sysusers.d/"
out=$(systemd-sysusers --root="$root" 2>&1); rc=$?
[ -n "$out" ] && printf '%s\n' "$out" | diag
# It reports what it creates; anything else (a parse error, an ignored line) is a failure.
other=$(printf '%s\n' "$out" | grep -v -e '^Creating group ' -e '^$')
check "sysusers.d/lockstep.conf applies cleanly" test "$rc" -eq 0 -a -z "$other"
group=$(sed -n 's/^SocketGroup=//p' "$u/counterd.socket")
check "sysusers.d creates SocketGroup= ($group)" grep -q "^$group:" "$root/etc/group"

# 14. make install puts the units and the sysusers.d file where systemd looks (DESTDIR, unprivileged).
dest="$tmp/dest"
out=$(${MAKE:-make} -s -C "$TOP_BUILDDIR" DESTDIR="$dest" install-systemdsystemunitDATA install-dist_sysusersDATA 2>&1); rc=$?
[ -n "$out" ] && printf '%s\n' "$out" | diag
unitdir=$(sed -n 's/^systemdsystemunitdir = //p' "$TOP_BUILDDIR/Makefile")
sysusersdir=$(sed -n 's/^sysusersdir = //p' "$TOP_BUILDDIR/Makefile")
inst_ok() {
    local f
    [ "$rc" -eq 0 ] || return 1
    for f in $units; do
        find "$dest" -path "*/${unitdir##*/}/$f" -type f | grep -q . || { echo "$f not installed" | diag; return 1; }
    done
    find "$dest" -path "*/${sysusersdir##*/}/lockstep.conf" -type f | grep -q .
}
check "make install puts units and sysusers.d file into their directories" inst_ok

# 15. ...and, unless the prefix is /usr (where systemd.pc's directories are meant) or a directory was
# chosen with --with-...dir, under the prefix, not into the live system's /lib/systemd/system.
prefix=$(sed -n 's/^prefix = //p' "$TOP_BUILDDIR/Makefile")
under_prefix() {
    local f n=0 bad=
    [ "$rc" -eq 0 ] || return 1
    for f in $(cd "$dest" && find . -type f \( -name '*.service' -o -name '*.socket' -o -name lockstep.conf \)); do
        f=${f#.}
        n=$((n + 1))
        case $f in "${prefix%/}"/*) ;; *) bad="$bad $f";; esac
    done
    [ "$n" -eq 5 ] || { echo "$n files installed, not 5" | diag; return 1; }
    [ -z "$bad" ] || { echo "outside $prefix:$bad" | diag; return 1; }
}
if [ "${prefix%/}" = /usr ]; then
    tap_n=$((tap_n + 1)); echo "ok $tap_n - make install stays under the prefix # SKIP prefix is /usr"
elif "$TOP_BUILDDIR/config.status" --config | grep -qE -- "--with-(systemdsystemunit|sysusers)dir"; then
    tap_n=$((tap_n + 1)); echo "ok $tap_n - make install stays under the prefix # SKIP directories given to configure"
else
    check "make install stays under the prefix ($prefix)" under_prefix
fi

# 16-18. The drop-in examples users copy (Environment= lines of the units' comments, docs/systemd.md
# and the man pages) verify without a warning: unquoted spaces separate assignments, so
# Environment=COUNTERD_OPTIONS=--a=1 --b=2 loses --b=2 with "Invalid environment assignment".
# examples FILE...: every Environment= example line, man-page escapes undone.
examples() {
    { sed -n 's/^#  *\(Environment=.*\)/\1/p' "$@"
      grep -ohE '`Environment=[^`]*`' "$@" | tr -d '`'
      grep -h '^Environment=.' "$@"; } | sed 's/\\-/-/g' | sort -u
}
# examples_verify NAME FILE...: FILE's examples as drop-ins of the service they set, verified quietly.
examples_verify() {
    local name=$1 lines line svc rc
    shift
    lines=$(examples "$@")
    printf '%s\n' "$lines" | grep -q COUNTERD_OPTIONS || { echo "no COUNTERD_OPTIONS example in $*" | diag; return 1; }
    rm -rf "$u"/*.service.d
    mkdir -p "$u/record-countd.service.d" "$u/counterd.service.d"
    printf '[Service]\n' > "$u/record-countd.service.d/$name.conf"
    printf '[Service]\n' > "$u/counterd.service.d/$name.conf"
    while IFS= read -r line; do
        case $line in *RECORD_COUNTD_*) svc=record-countd;; *) svc=counterd;; esac
        printf '%s\n' "$line" >> "$u/$svc.service.d/$name.conf"
        echo "$svc: $line" | diag
    done <<< "$lines"
    verify_quiet $units; rc=$?
    rm -rf "$u"/*.service.d
    return $rc
}
check "the units' drop-in examples verify without warnings" \
    examples_verify units "$gen/record-countd.service" "$gen/counterd.service"
check "docs/systemd.md's drop-in examples verify without warnings" \
    examples_verify docs "$TOP_SRCDIR/docs/systemd.md"
check "the man pages' drop-in examples verify without warnings" \
    examples_verify man "$TOP_SRCDIR/man/record-countd.8" "$TOP_SRCDIR/man/counterd.8"

finish
