#!/usr/bin/env bash
# Times `profcap collapse` on a large perf script input (~100 MB by default)
# and, when stackcollapse-perf.pl is available, compares throughput and
# output with it.
#
# usage: scripts/bench-collapse.sh [SIZE_MB]
#   STACKCOLLAPSE=/path/to/stackcollapse-perf.pl  use this Perl script
#                                                 (default: found in PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb=${1:-100}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

make -s bpf && go build -o "$work/profcap" ./cmd/profcap

# The input: the conformance corpus (real perf script outputs) repeated.
# Each copy gets its own TIDs so the number of distinct stacks grows too.
corpus=formats/perfscript/testdata/conformance
in="$work/perf.txt"
i=0
while [ "$(stat -c %s "$in" 2>/dev/null || echo 0)" -lt $((size_mb << 20)) ]; do
  for f in "$corpus"/perf-iperf-stacks-pidtid-01.txt "$corpus"/perf-numa-stacks-01.txt; do
    sed "s#/\([0-9][0-9]*\) #/\1$((i % 50)) #" "$f"
  done >>"$in"
  i=$((i + 1))
done
bytes=$(stat -c %s "$in")
mb=$(awk "BEGIN{printf \"%.1f\", $bytes/1048576}")
echo "input: $mb MB ($i copies of the corpus)"

now() { date +%s.%N; }
rate() { awk "BEGIN{printf \"%.1f\", $bytes/1048576/($2-$1)}"; }

t0=$(now)
if command -v /usr/bin/time >/dev/null; then
  /usr/bin/time -f "profcap collapse max RSS: %M KB" "$work/profcap" collapse --tid "$in" >"$work/go.folded"
else
  "$work/profcap" collapse --tid "$in" >"$work/go.folded"
fi
t1=$(now)
go_rate=$(rate "$t0" "$t1")
echo "profcap collapse --tid: $(awk "BEGIN{printf \"%.2f\", $t1-$t0}") s, $go_rate MB/s, $(wc -l <"$work/go.folded") stacks"

pl=${STACKCOLLAPSE:-$(command -v stackcollapse-perf.pl || true)}
if [ -z "$pl" ]; then
  echo "stackcollapse-perf.pl not found (Debian has no package for it; set STACKCOLLAPSE=path): no comparison"
  exit 0
fi
t0=$(now)
perl "$pl" --tid "$in" >"$work/pl.folded" 2>/dev/null
t1=$(now)
pl_rate=$(rate "$t0" "$t1")
echo "stackcollapse-perf.pl --tid: $(awk "BEGIN{printf \"%.2f\", $t1-$t0}") s, $pl_rate MB/s"
echo "ratio: $(awk "BEGIN{printf \"%.1f\", $go_rate/$pl_rate}")x"
if cmp -s "$work/go.folded" "$work/pl.folded"; then
  echo "outputs identical"
else
  echo "OUTPUTS DIFFER" >&2
  exit 1
fi
