#!/bin/bash
# libdfr as its users get it: installed into a temp DESTDIR, it exports exactly the functions of
# libdfr.sym, which dfr.h declares and libdfr(3) documents with the same arguments; it has a
# soname; dfr.h compiles alone in C and C++; a C++ program and every example build through
# pkg-config alone and run; and pkg-config --static is enough for a static link.
. "$TOP_SRCDIR/tests/systemd/lib.sh"
# (libtool's first build_libtool_libs is this build's; a later one is its disable-shared tag.)
if [ "$(sed -n 's/^build_libtool_libs=//p' "$TOP_BUILDDIR/libtool" | head -n 1)" = no ]; then
    echo "1..0 # SKIP configured with --disable-shared"
    exit 0
fi
plan 12

here="$TOP_SRCDIR/tests/abi"
dest="$tmp/dest"
# What the library was built with: a sanitizer build's libdfr needs its programs built alike.
mkvar() { sed -n "s/^$1 = *//p" "$TOP_BUILDDIR/Makefile"; }
CC=$(mkvar CC)
san="$(mkvar SAN_CFLAGS) $(mkvar SAN_LDFLAGS)"
if [ -z "${CXX:-}" ]; then
    case $CC in *clang*) CXX=clang++ ;; *) CXX=c++ ;; esac
fi
command -v "${CXX%% *}" >/dev/null || CXX=
skip() { tap_n=$((tap_n + 1)); echo "ok $tap_n - $1 # SKIP $2"; }
# run_logged COMMAND...: run it, its output as TAP diagnostics.
run_logged() { "$@" > "$tmp/out" 2>&1; local rc=$?; diag < "$tmp/out"; return $rc; }

# 1. Install only the library's files: the daemons may be running in other tests.
installed() {
    (unset MAKEFLAGS MFLAGS MAKELEVEL
     make -s -C "$TOP_BUILDDIR" DESTDIR="$dest" install-libLTLIBRARIES install-includeHEADERS \
         install-pkgconfigDATA install-man3) > "$tmp/install.log" 2>&1 || { diag < "$tmp/install.log"; return 1; }
    # The installed libdfr.pc names the final prefix; point a copy at the DESTDIR (as
    # PKG_CONFIG_SYSROOT_DIR would, but for libdfr alone, not for libevent).
    local pc
    pc=$(find "$dest" -name libdfr.pc) && [ -n "$pc" ] || { echo "no libdfr.pc installed" | diag; return 1; }
    mkdir -p "$tmp/pc"
    sed -E "s,^(prefix|exec_prefix|libdir|includedir)=/,\\1=$dest/," "$pc" > "$tmp/pc/libdfr.pc"
    export PKG_CONFIG_PATH="$tmp/pc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
    libdir=$(pkg-config --variable=libdir libdfr) && incdir=$(pkg-config --variable=includedir libdfr) &&
        [ -f "$libdir/libdfr.so" ] && [ -f "$incdir/dfr.h" ] || { echo "libdfr.so or dfr.h missing" | diag; return 1; }
    export LD_LIBRARY_PATH="$libdir"
}
if installed; then
    ok "the library, dfr.h, libdfr.pc and libdfr(3) install into a DESTDIR"
else
    notok "the library, dfr.h, libdfr.pc and libdfr(3) install into a DESTDIR"
    finish "not run: the install failed"
    exit 1
fi

# Functions listed in libdfr.sym (comments and blank lines aside).
sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/libdfr.sym" | sort > "$tmp/sym"
# same A B WHAT: files A and B hold the same lines, else the difference is shown.
same() {
    diff "$1" "$2" > "$tmp/diff" && return 0
    { echo "$3 (< ${1##*/}, > ${2##*/}):"; cat "$tmp/diff"; } | diag
    return 1
}

# 2. The dynamic symbol table: the public functions and nothing else (no dfr__ internals,
#    no evtimer helpers, no leaked non-static names).
exports() {
    nm -D --defined-only "$libdir/libdfr.so" | awk '{ print $NF }' |
        grep -vxE '_init|_fini|_edata|_end|__bss_start' | sort > "$tmp/exported"
    same "$tmp/sym" "$tmp/exported" "libdfr.so's exports differ from libdfr.sym"
}
check "libdfr.so exports exactly the functions of tests/abi/libdfr.sym" exports

# 3. libdfr.a cannot hide its internals, so they keep to its namespace (dfr_, dfr__): a static
#    link must not clash with a program's own names.
static_names() {
    nm -g --defined-only "$libdir/libdfr.a" 2>/dev/null | awk 'NF == 3 { print $3 }' |
        grep -v '^dfr_' | sort -u > "$tmp/foreign"
    [ -s "$tmp/foreign" ] && { echo "libdfr.a defines, outside dfr_:"; cat "$tmp/foreign"; } | diag
    [ ! -s "$tmp/foreign" ]
}
if [ -f "$libdir/libdfr.a" ]; then
    check "libdfr.a defines global names only under dfr_" static_names
else
    skip "libdfr.a defines global names only under dfr_" "no libdfr.a (--disable-static)"
fi

# Prototypes, normalised: one space at most, none around ( ) , * and no trailing ;.
normalise() { sed -E 's/[[:space:]]+/ /g; s/ ?([(),*]) ?/\1/g; s/^ //; s/;? ?$//'; }
# dfr.h's function declarations, with attributes removed.
$CC -E -P -D'__attribute__(x)=' "$incdir/dfr.h" | tr '\n' ' ' | tr ';' '\n' | normalise |
    grep -E '^[a-z][a-z0-9_ ]*[ *]dfr_[a-z0-9_]+\(' | grep -v '^typedef' | sort > "$tmp/hdr-protos"
sed -E 's/^.*[ *](dfr_[a-z0-9_]+)\(.*/\1/' "$tmp/hdr-protos" | sort > "$tmp/hdr-names"

# 4. dfr.h declares what the library exports.
check "dfr.h declares exactly the functions of libdfr.sym" \
    same "$tmp/sym" "$tmp/hdr-names" "dfr.h's functions differ from libdfr.sym"

# 5-6. libdfr(3): each prototype as the reader sees it, and a page groff formats cleanly.
page="$dest/$(cd "$dest" && find . -name libdfr.3 | head -n 1)"
man_protos() {
    groff -man -Tascii -P-cbou "$page" 2>/dev/null |
        awk '{ if (held != "") { $0 = held " " $0; held = "" } if (/dfr_[a-z0-9_]+\(.*,[[:space:]]*$/) { held = $0; next } print }' |
        grep -E '^[[:space:]]*[a-z][a-z0-9_ ]*[ *]dfr_[a-z0-9_]+\(.*\);[[:space:]]*$' | normalise | sort > "$tmp/man-protos"
    same "$tmp/hdr-protos" "$tmp/man-protos" "libdfr(3)'s synopses differ from dfr.h"
}
formats_clean() {
    groff -man -ww -z -t "$page" > "$tmp/groff" 2>&1
    [ -s "$tmp/groff" ] && diag < "$tmp/groff"
    [ ! -s "$tmp/groff" ]
}
if command -v groff >/dev/null; then
    check "libdfr(3) shows every prototype of dfr.h, with its arguments, and no other" man_protos
    check "libdfr(3) formats without warnings" formats_clean
else
    skip "libdfr(3) shows every prototype of dfr.h, with its arguments, and no other" "groff is not installed"
    skip "libdfr(3) formats without warnings" "groff is not installed"
fi

# 7. A soname, from -version-info: libdfr.so.N with N = current - age, and the file it names.
soname() {
    local la="$libdir/libdfr.la" cur age so
    cur=$(sed -n 's/^current=//p' "$la"); age=$(sed -n 's/^age=//p' "$la")
    so=$(readelf -d "$libdir/libdfr.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
    echo "soname $so (current $cur, age $age)" | diag
    [ -n "$cur" ] && [ "$so" = "libdfr.so.$((cur - age))" ] && [ -f "$libdir/$so" ]
}
check "libdfr.so has a soname, libdfr.so.(current - age)" soname

# 8. dfr.h alone, first and only include, strict C and C++.
printf '#include <dfr.h>\nint main(void) { struct dfr_stats st; (void)st; return DFR_ECANCELED == 0; }\n' > "$tmp/alone.c"
header_alone() {
    local c rc=0 cmds=("$CC -std=c99 -pedantic -Wall -Wextra -Werror")
    command -v clang >/dev/null && cmds+=("clang -std=c99 -pedantic -Wall -Wextra -Werror")
    [ -n "$CXX" ] && cmds+=("$CXX -x c++ -std=c++98 -pedantic -Wall -Wextra -Werror")
    for c in "${cmds[@]}"; do
        echo "$c" | diag
        run_logged $c -I"$incdir" -c -o "$tmp/alone.o" "$tmp/alone.c" || rc=1
    done
    return $rc
}
check "dfr.h compiles alone with -std=c99 -pedantic -Werror (cc, clang) and as C++" header_alone

# 9. pkg-config: libdfr alone for a shared link, what libdfr.a needs for a static one.
pc_libs() {
    local shared static
    shared=$(pkg-config --libs libdfr) && static=$(pkg-config --static --libs libdfr) || return 1
    printf 'libs: %s\nstatic: %s\n' "$shared" "$static" | diag
    case " $shared " in *' -levent'*) return 1 ;; esac
    case " $static " in *' -levent_core '*) ;; *) return 1 ;; esac
    case " $static " in *' -lpthread '* | *' -pthread '*) ;; *) return 1 ;; esac
}
check "pkg-config --libs libdfr is libdfr alone, --static adds libevent_core and pthread" pc_libs

# 10. A C++ program, built and linked with pkg-config libdfr only, runs against the installed library.
cxx_consumer() {
    run_logged $CXX -std=c++11 -pedantic -Wall -Wextra -Werror $san -o "$tmp/consumer" "$here/consumer.cc" \
        $(pkg-config --cflags --libs libdfr) || return 1
    ldd "$tmp/consumer" | grep libdfr | diag
    [ "$("$tmp/consumer" 2>&1)" = ok ]
}
if [ -n "$CXX" ]; then
    check "a C++ program built with pkg-config libdfr runs against the installed libdfr" cxx_consumer
else
    skip "a C++ program built with pkg-config libdfr runs against the installed libdfr" "no C++ compiler"
fi

# 11. Every example builds with pkg-config only (no source tree, no config.h); counter-locked runs.
examples() {
    local f name rc=0 ex="$TOP_SRCDIR/examples"
    for f in "$ex"/*.c; do
        name=${f##*/}; name=${name%.c}
        [ "$name" = fake-record ] && continue
        run_logged $CC -std=c99 -pedantic -Wall -Wextra -Werror $san -o "$tmp/$name" "$f" "$ex/fake-record.c" \
            $(pkg-config --cflags --libs libdfr libevent) || { echo "($name)" | diag; rc=1; }
    done
    [ "$rc" -eq 0 ] && [ "$("$tmp/counter-locked")" = $'1 d1\n2 d2' ]
}
check "every example builds with pkg-config against the installed libdfr; counter-locked runs (1 d1, 2 d2)" examples

# 12. Static: libdfr.a and what pkg-config --static names, nothing else. Fully static in a plain build; in a
# sanitizer build (whose runtime cannot be linked statically) the archives are static and the C library shared.
static_link() {
    local pre=-static post=
    if [ -n "${san// /}" ]; then
        pre="$san -Wl,-Bstatic"; post=-Wl,-Bdynamic
    fi
    rm -f "$libdir"/libdfr.so*    # a static link must not need it
    run_logged $CXX $pre -std=c++11 -o "$tmp/consumer-static" "$here/consumer.cc" \
        $(pkg-config --cflags --static --libs libdfr) $post || return 1
    run_logged $CC $pre -std=c99 -o "$tmp/counter-static" "$TOP_SRCDIR/examples/counter-locked.c" \
        "$TOP_SRCDIR/examples/fake-record.c" $(pkg-config --cflags --static --libs libdfr libevent) $post || return 1
    [ "$("$tmp/consumer-static" 2>&1)" = ok ] && [ "$("$tmp/counter-static")" = $'1 d1\n2 d2' ]
}
if [ ! -f "$libdir/libdfr.a" ]; then
    skip "a static link with pkg-config --static runs (C++ program, counter-locked)" "no libdfr.a (--disable-static)"
elif [ -z "$CXX" ] || [ "$($CC -print-file-name=libevent_core.a)" = libevent_core.a ] ||
    [ "$($CXX -print-file-name=libstdc++.a)" = libstdc++.a ]; then
    skip "a static link with pkg-config --static runs (C++ program, counter-locked)" "no static libevent or libstdc++"
else
    check "a static link with pkg-config --static runs (C++ program, counter-locked)" static_link
fi
finish
