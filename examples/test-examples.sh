#!/bin/bash
# Run each example and check its output (TAP).
ex=${TOP_BUILDDIR:-.}/examples
n=0
fail=0
check() {	# check NAME EXPECTED
	local name=$1 expected=$2 got
	n=$((n + 1))
	got=$("$ex/$name" 2>&1)
	if [ "$got" = "$expected" ]; then
		echo "ok $n - $name prints the expected output"
	else
		echo "not ok $n - $name prints the expected output"
		echo "# expected:"; printf '%s\n' "$expected" | sed 's/^/#   /'
		echo "# got:"; printf '%s\n' "$got" | sed 's/^/#   /'
		fail=1
	fi
}
echo "1..8"
check counter-unsafe $'2 d1\n2 d2'
check counter-locked $'1 d1\n2 d2'
check counter-stateless $'1 d1\n2 d2'
check queue-lock "job 1: recording
job 1: recorded
snapshot: 1 job(s) recorded, none in progress
job 2: recording
job 2: recorded
job 3: recording
job 3: recorded
job 4: recording
job 4: recorded
queue closed and drained: consumer stops"
check queue-lock-shutdown "job 1: recording
job 1: recorded
job 2: recording
job 2: recorded
job 3: recording
job 3: recorded
job 4: recording
job 4: recorded
consumer: waiting get cancelled
4 job(s) recorded, at most 1 at once; 3 waited for the lock"
check fetch-gather "round 1: every page arrives
fetch 1: done
fetch 2: done
fetch 0: done
fetch 4: done
fetch 3: done
fetch 5: done
gathered in input order: page-0 page-1 page-2 page-3 page-4 page-5
at most 2 fetch(es) at once; 4 waited for a token, 0 cancelled while waiting
round 2: page 2 never arrives
fetch 1: done
fetch 0: done
fetch 2: timed out
gather failed at member 2: member 2: timed out
fetch 3: cancelled
fetch 4: cancelled
at most 2 fetch(es) at once; 3 waited for a token, 1 cancelled while waiting"
check chain-cancel "request 1: user alice
request 1: profile of alice
request 1: picture alice.png
request 1: done (alice, profile of alice, alice.png)
request 2: user bob
request 2: profile of bob
request 2: no picture (picture server down): default.png
request 2: done (bob, profile of bob, default.png)
request 3: user carol
request 3: cancelling
request 3: call \"profile of carol\" stopped
request 3: failed: cancelled"
# They are what readers copy: each must build outside the tree, with dfr.h and libevent's headers only.
n=$((n + 1))
src=${TOP_SRCDIR:-..}
out=$(for f in "$src"/examples/*.c; do
	${CC:-cc} -std=c99 -Wall -Werror -fsyntax-only -I"$src/common" $(pkg-config --cflags libevent) "$f" 2>&1 ||
		echo "($f)"
done)
if [ -z "$out" ]; then
	echo "ok $n - the examples build without the project's config.h"
else
	echo "not ok $n - the examples build without the project's config.h"
	printf '%s\n' "$out" | sed 's/^/#   /'
fi
exit 0
