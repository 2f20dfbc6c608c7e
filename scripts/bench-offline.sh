#!/usr/bin/env bash
# Times profcap against the reference Perl tools on the same inputs and prints
# the ratios (docs/performance.md has the figures and how they were taken):
#
#   collapse  `profcap collapse` vs stackcollapse-perf.pl on FlameGraph's Java
#             and iperf (kernel-heavy) test inputs and on a Rust and a C++
#             recording (formats/perfscript/testdata/bench), each repeated to
#             about 60 MB; outputs must be byte-identical in every mode
#             (default, --pid, --tid, --kernel, --jit, --all, --addrs).
#   svg       `profcap flame --format svg` vs flamegraph.pl on 100,000
#             distinct folded stacks (flame/bench_test.go's genFolded), with
#             the peak RSS of each.
#
# Wall time: one hyperfine run per input in which the two tools' commands
# alternate, ROUNDS blocks of RUNS runs each, so load that comes and goes on a
# shared machine falls on both; the figure is the median of the block medians.
# CPU time: perf stat's task-clock (all threads), rounds alternating the same
# way; hyperfine's user/system come from rusage, which a VM counts in ticks and
# which is meaningless for a 20 ms command. The load average is printed beside
# each measurement.
#
# usage: scripts/bench-offline.sh [collapse|svg|all]
#   FLAMEGRAPH_DIR=DIR   a directory holding FlameGraph's stackcollapse-perf.pl
#     and flamegraph.pl, or each on its own:
#   STACKCOLLAPSE=/path/to/stackcollapse-perf.pl   FLAMEGRAPH=/path/to/flamegraph.pl
#     (FlameGraph is not packaged by Debian and is not part of this
#     repository: keep a copy outside it; without one profcap is timed alone)
#   ROUNDS=3 RUNS=2   blocks per command, runs per block
#   INPUTS="Java Kernel Rust Cxx"   collapse inputs to time
#   EXTRA="FILE..."   more perf script files to time, each repeated to about 60 MB
#     (e.g. FlameGraph's test/perf-vertx-stacks-01.txt)
#   KEEP=DIR          keep the inputs and outputs in DIR (default: a temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
case "$what" in collapse | svg | all) ;; *) sed -n 's/^# usage: /usage: /p' "$0" >&2; exit 2 ;; esac
rounds=${ROUNDS:-3}
runs=${RUNS:-2}
inputs=${INPUTS:-Java Kernel Rust Cxx}
if [ -n "${KEEP:-}" ]; then
	work=$KEEP
	mkdir -p "$work"
else
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
fi
command -v hyperfine >/dev/null || { echo "bench-offline: hyperfine is needed (apt-get install hyperfine)" >&2; exit 1; }
have_perf=0
if command -v perf >/dev/null && perf stat -e task-clock -x, true 2>/dev/null >/dev/null; then
	have_perf=1
fi

make -s bpf && go build -o "$work/profcap" ./cmd/profcap
profcap=$work/profcap

load() { cut -d' ' -f1-3 /proc/loadavg; }
echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(free -g | awk '/^Mem:/ {print $2}') GB RAM"
echo "go:      $(go version | cut -d' ' -f3), profcap $(git describe --always --dirty 2>/dev/null || echo ?)"
echo "load:    $(load) (1, 5, 15 min)"

# side NAME_A CMD_A NAME_B CMD_B: one hyperfine run, the commands alternating
# in ROUNDS blocks; prints "median_a min_a max_a median_b min_b max_b" (s).
side() {
	local na=$1 ca=$2 nb=$3 cb=$4 args=() r
	for r in $(seq "$rounds"); do
		args+=(-n "$na $r" "$ca" -n "$nb $r" "$cb")
	done
	# hyperfine's warnings (outliers, a slow first run) are the shared
	# machine's; the min-max range shows them.
	hyperfine -N -w 1 -r "$runs" --style none --output=null --export-csv "$work/hf.csv" "${args[@]}" >/dev/null 2>"$work/hf.err" ||
		{ cat "$work/hf.err" >&2; exit 1; }
	awk -F, -v a="$na" -v b="$nb" '
		NR > 1 {
			split($1, n, " "); t = n[1]
			k[t]++; med[t, k[t]] = $4
			if (!(t in lo) || $7 < lo[t]) lo[t] = $7
			if ($8 > hi[t]) hi[t] = $8
		}
		function median(t,   i, j, x, m) {
			m = k[t]
			for (i = 1; i <= m; i++) x[i] = med[t, i]
			for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (x[j] < x[i]) { v = x[i]; x[i] = x[j]; x[j] = v }
			return m % 2 ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2
		}
		END { printf "%.4f %.4f %.4f %.4f %.4f %.4f\n", median(a), lo[a], hi[a], median(b), lo[b], hi[b] }' "$work/hf.csv"
}

# cpu CMD_A CMD_B: perf stat task-clock of each, ROUNDS rounds alternating,
# RUNS runs each; prints "median_a median_b" in ms.
cpu() {
	local r out
	: >"$work/cpu.txt"
	for r in $(seq "$rounds"); do
		for out in a b; do
			local c=$1
			[ $out = b ] && c=$2
			# shellcheck disable=SC2086
			perf stat -x, -e task-clock -r "$runs" $c 2>&1 >/dev/null | awk -F, -v o=$out '$3 ~ /task-clock/ {print o, $1}' >>"$work/cpu.txt"
		done
	done
	awk '
		{ v[$1, ++n[$1]] = $2 }
		function median(t,   i, j, x, m, s) {
			m = n[t]
			for (i = 1; i <= m; i++) x[i] = v[t, i]
			for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (x[j] < x[i]) { s = x[i]; x[i] = x[j]; x[j] = s }
			return m % 2 ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2
		}
		END { printf "%.1f %.1f\n", median("a"), median("b") }' "$work/cpu.txt"
}

if [ "$what" != svg ]; then
	echo
	echo "== profcap collapse vs stackcollapse-perf.pl"
	PERFSCRIPT_BENCH_DIR=$work go test ./formats/perfscript -run '^TestWriteCollapseBenchInputs$' -count=1 >/dev/null
	for f in ${EXTRA:-}; do
		name=$(basename "$f" .txt)
		: >"$work/$name.txt"
		while [ "$(stat -c %s "$work/$name.txt")" -lt $((60 << 20)) ]; do cat "$f" >>"$work/$name.txt"; done
		inputs="$inputs $name"
	done
	pl=${STACKCOLLAPSE:-${FLAMEGRAPH_DIR:+$FLAMEGRAPH_DIR/stackcollapse-perf.pl}}
	pl=${pl:-$(command -v stackcollapse-perf.pl || true)}
	if [ -z "$pl" ]; then
		echo "stackcollapse-perf.pl not found (set STACKCOLLAPSE=path): profcap alone"
	fi
	printf '%-7s %7s | %-27s %-27s %7s | %-21s %6s | %s\n' input MB "profcap wall s (min-max)" "perl wall s (min-max)" ratio "CPU ms profcap/perl" ratio load
	for name in $inputs; do
		in=$work/$name.txt
		mb=$(awk -v b="$(stat -c %s "$in")" 'BEGIN {printf "%.1f", b / 1048576}')
		if [ -n "$pl" ]; then
			for mode in default pid tid kernel jit all addrs; do
				opt=()
				[ $mode != default ] && opt=(--$mode)
				"$profcap" collapse "${opt[@]}" "$in" >"$work/go.folded"
				perl "$pl" "${opt[@]}" "$in" >"$work/pl.folded" 2>/dev/null
				if ! cmp -s "$work/go.folded" "$work/pl.folded"; then
					echo "$name --$mode: OUTPUTS DIFFER from stackcollapse-perf.pl" >&2
					exit 1
				fi
			done
			l0=$(load)
			read -r gm glo ghi pm plo phi < <(side profcap "$profcap collapse $in" perl "perl $pl $in")
			read -r gc pc < <(if [ $have_perf = 1 ]; then cpu "$profcap collapse $in" "perl $pl $in"; else echo 0 0; fi)
			printf '%-7s %7s | %-27s %-27s %6.1fx | %9s / %-9s %5.1fx | %s -> %s\n' "$name" "$mb" \
				"$gm ($glo-$ghi)" "$pm ($plo-$phi)" "$(awk -v a="$pm" -v b="$gm" 'BEGIN {print a / b}')" \
				"$gc" "$pc" "$(awk -v a="$pc" -v b="$gc" 'BEGIN {print (b > 0 ? a / b : 0)}')" "$l0" "$(load)"
		else
			hyperfine -N -w 1 -r "$runs" --style basic --output=null "$profcap collapse $in"
		fi
	done
	[ -n "$pl" ] && echo "outputs byte-identical in default, --pid, --tid, --kernel, --jit, --all, --addrs"
fi

if [ "$what" != collapse ]; then
	echo
	echo "== profcap flame --format svg vs flamegraph.pl, 100,000 distinct stacks"
	in=$work/bench100k.folded
	FLAME_BENCH_INPUT=$in go test ./flame -run '^TestWriteBenchInput$' -count=1 >/dev/null
	fg=${FLAMEGRAPH:-${FLAMEGRAPH_DIR:+$FLAMEGRAPH_DIR/flamegraph.pl}}
	fg=${fg:-$(command -v flamegraph.pl || true)}
	rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
	grss=$(rss "$profcap" flame --format svg -o "$work/go.svg" "$in")
	if [ -z "$fg" ]; then
		echo "flamegraph.pl not found (set FLAMEGRAPH=path): profcap alone; peak RSS $((grss / 1024)) MiB"
		hyperfine -N -w 1 -r "$runs" --style basic --output=null "$profcap flame --format svg -o $work/go.svg $in"
	else
		prss=$(rss perl "$fg" "$in")
		l0=$(load)
		read -r gm glo ghi pm plo phi < <(side profcap "$profcap flame --format svg -o $work/go.svg $in" perl "perl $fg $in")
		read -r gc pc < <(if [ $have_perf = 1 ]; then cpu "$profcap flame --format svg -o $work/go.svg $in" "perl $fg $in"; else echo 0 0; fi)
		printf '%-21s %-21s %7s | %-23s %6s | %-17s | %s\n' "profcap wall s" "perl wall s" ratio "CPU ms profcap/perl" ratio "peak RSS MiB" load
		printf '%-21s %-21s %6.1fx | %9s / %-11s %5.1fx | %7s / %-7s | %s -> %s\n' \
			"$gm ($glo-$ghi)" "$pm ($plo-$phi)" "$(awk -v a="$pm" -v b="$gm" 'BEGIN {print a / b}')" \
			"$gc" "$pc" "$(awk -v a="$pc" -v b="$gc" 'BEGIN {print (b > 0 ? a / b : 0)}')" \
			"$((grss / 1024))" "$((prss / 1024))" "$l0" "$(load)"
	fi
fi
