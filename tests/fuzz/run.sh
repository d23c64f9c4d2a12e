#!/bin/sh
# Run every built libFuzzer target (server/fuzz-*, client/fuzz-*, util/fuzz-* in the build tree) for a bounded time,
# one TAP line each.
# Each starts from its checked-in seed corpus (server|client|util/fuzz-corpus/<target> in the source tree, read only); new
# inputs go to a temporary directory, crashes are kept in $TOP_BUILDDIR/tests/fuzz/artifacts/ and named in the output.
#   FUZZ_SECONDS=20 (per target)   FUZZ_RSS_MB=2048
top_build=${TOP_BUILDDIR:-.}
top_src=${TOP_SRCDIR:-.}
secs=${FUZZ_SECONDS:-20}
rss=${FUZZ_RSS_MB:-2048}
artifacts=$top_build/tests/fuzz/artifacts
mkdir -p "$artifacts"
work=$(mktemp -d "${TMPDIR:-/tmp}/lockstep-fuzz.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT INT TERM

targets=
for f in "$top_build"/server/fuzz-* "$top_build"/client/fuzz-* "$top_build"/util/fuzz-*; do
	[ -f "$f" ] && [ -x "$f" ] || continue
	case $f in *.o|*.lo|*.la|*.c|*.h|*.log|*.trs|*.dSYM) continue ;; esac
	targets="$targets $f"
done

if [ -z "$targets" ]; then
	echo "1..1"
	echo "not ok 1 - no fuzz target built (expected server/fuzz-*, client/fuzz-* and util/fuzz-* under $top_build with --enable-fuzzing)"
	exit 0
fi

n=0
for f in $targets; do n=$((n + 1)); done
echo "1..$n"
i=0
for f in $targets; do
	i=$((i + 1))
	name=$(basename "$f")
	dir=$(basename "$(dirname "$f")")
	seed=$top_src/$dir/fuzz-corpus/$name
	# libFuzzer's name for a target may drop the "fuzz-" prefix in the corpus folder; accept both.
	[ -d "$seed" ] || seed=$top_src/$dir/fuzz-corpus/${name#fuzz-}
	if [ ! -d "$seed" ] || [ -z "$(ls -A "$seed" 2>/dev/null)" ]; then
		echo "not ok $i - $dir/$name: no seed corpus in $dir/fuzz-corpus/$name"
		continue
	fi
	mkdir -p "$work/$name"
	log=$work/$name.log
	"$f" -max_total_time="$secs" -rss_limit_mb="$rss" -timeout=10 -print_final_stats=1 \
		-artifact_prefix="$artifacts/$name-" "$work/$name" "$seed" >"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	if [ $rc -eq 0 ]; then
		echo "ok $i - $dir/$name: ${runs:-?} runs in ${secs}s, no crash"
	else
		echo "not ok $i - $dir/$name: exit $rc after ${runs:-?} runs (artifacts in $artifacts)"
		grep -E 'ERROR|SUMMARY|Test unit written|runtime error' "$log" | head -n 20 | sed 's/^/# /'
		tail -n 20 "$log" | sed 's/^/# /'
	fi
done
exit 0
