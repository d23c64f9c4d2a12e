#!/bin/bash
# The man pages: every option a program's --help lists is documented in its page, and groff
# formats each page without a warning.
. "$TOP_SRCDIR/tests/systemd/lib.sh"
plan 6

COUNTERCTL=${COUNTERCTL:-$TOP_BUILDDIR/client/counterctl}
man="$TOP_SRCDIR/man"

# documents BINARY PAGE: each --long-option of BINARY --help appears in PAGE (written \-\-name).
documents() {
    local help opts o missing=
    help=$("$1" --help 2>&1) || { echo "$1 --help failed" | diag; return 1; }
    opts=$(printf '%s\n' "$help" | grep -oE '(^|[ ,\[])--[a-z][a-z-]*' | sed 's/^[ ,\[]//' | sort -u)
    [ -n "$opts" ] || { echo "no options found in $1 --help" | diag; return 1; }
    for o in $opts; do
        grep -qF -- "$(printf '%s' "$o" | sed 's/-/\\-/g')" "$2" || missing="$missing $o"
    done
    [ -z "$missing" ] || { echo "$2 lacks:$missing" | diag; return 1; }
}
check "record-countd(8) documents every option of --help" documents "$RECORD_COUNTD" "$man/record-countd.8"
check "counterd(8) documents every option of --help" documents "$COUNTERD" "$man/counterd.8"
check "counterctl(1) documents every option of --help" documents "$COUNTERCTL" "$man/counterctl.1"

# formats_clean PAGE: groff -man with all warnings says nothing.
formats_clean() {
    local out
    out=$(groff -man -ww -z -t "$1" 2>&1)
    [ -n "$out" ] && printf '%s\n' "$out" | diag
    [ -z "$out" ]
}
for page in record-countd.8 counterd.8 counterctl.1; do
    if command -v groff >/dev/null; then
        check "$page formats without warnings" formats_clean "$man/$page"
    else
        tap_n=$((tap_n + 1)); echo "ok $tap_n - $page formats without warnings # SKIP groff is not installed"
    fi
done
finish
