#!/bin/bash
# scripts/demo.py with the built daemons (short latency): every strategy shows what it should,
# both daemons stop with status 0, and the timeline is an SVG with one lane per run and a bar per request.
. "$TOP_SRCDIR/tests/systemd/lib.sh"
plan 5

out="$tmp/demo.out"
mkdir -p "$tmp/t"
TMPDIR="$tmp/t" "$PYTHON3" "$TOP_SRCDIR/scripts/demo.py" --latency 40ms --calls 300 --svg "$tmp/t.svg" > "$out" 2>&1
rc=$?
diag < "$out"

check "demo exits 0 (every strategy showed what it should)" test "$rc" -eq 0
check "both daemons stopped cleanly" grep -q '^both daemons stopped cleanly' "$out"
table_ok() {
    grep -Eq '^locked +1, 2 +1, 2 +2 +1 ' "$out" &&
    grep -Eq '^unsafe +2, 2 ' "$out" &&
    grep -Eq '^stateless +(1, 2|2, 1) ' "$out" &&
    grep -Eq '^locked, --batch-max 64 +1\.\.300, each once +1\.\.300 in order +[0-9]+ +1 ' "$out"
}
check "the table shows the race, its fixes and coalescing" table_ok
svg_ok() {
    "$PYTHON3" - "$tmp/t.svg" <<'PY'
import sys
import xml.etree.ElementTree as ET
ns = "{http://www.w3.org/2000/svg}"
root = ET.parse(sys.argv[1]).getroot()
texts = [t.text or "" for t in root.iter(ns + "text")]
lanes = [t for t in root.iter(ns + "text") if t.get("class") == "lanetitle"]
bars = [r for r in root.iter(ns + "rect") if r.get("class") == "bar"]
titles = [r.find(ns + "title").text for r in bars]
assert [l.text for l in lanes] == ["locked", "stateless", "unsafe", "locked, --batch-max 64"], [l.text for l in lanes]
# Two requests per seed run, and the coalesced run in few batches, each one labelled with its range.
assert sum("demo-batch:default" in t for t in titles) < 300 // 10, titles
assert sum("demo-unsafe:default" in t for t in titles) == 2, titles
import re
assert any(re.fullmatch(r"[0-9]+-[0-9]+", t) for t in texts), texts
PY
}
check "demo-timeline.svg parses, with one lane per run and a labelled bar per request" svg_ok
check "the demo removed its temp dir" eval '[ -z "$(ls -A "$tmp/t")" ]'
finish
