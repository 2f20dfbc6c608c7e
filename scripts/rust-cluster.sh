# Starts or stops a cluster of the Rust reference service (rust/refsvc), laid out
# like the reference cluster: 2 orchestrators and 3 Rust workers, each writing
# DIR/.pids/NAME.pid and DIR/.logs/NAME.log, each with --pprof --jemalloc-prof
# --taskdump and its own tokio-console address.
#
#   name             REST  tokio-console
#   orchestration-1  8080  127.0.0.1:6669
#   orchestration-2  8081  127.0.0.1:6670
#   worker-rust-1    8100  127.0.0.1:6671
#   worker-rust-2    8101  127.0.0.1:6672
#   worker-rust-3    8102  127.0.0.1:6673
#
# usage:
#   bash scripts/rust-cluster.sh start DIR [--variant release|profiling|stripped] [--sick NAME] [--pg URL] [-- EXTRA REFSVC FLAGS]
#   bash scripts/rust-cluster.sh stop DIR
#   bash scripts/rust-cluster.sh status DIR
#
# PORT_BASE_OFFSET (default 0) is added to every REST and console port, so tests
# can run clusters side by side. The binaries come from scripts/rust-build.sh
# ($PROFCAP_CACHE/rust/bin/refsvc-VARIANT, PROFCAP_CACHE defaulting to
# $HOME/.cache/profcap). `start` returns once every instance answers /health
# (exit 1, with the failing log's tail, if one does not within 30 s);
# `stop` sends SIGTERM to the pid in each instance's pid file, then SIGKILL
# after 5 s, and removes the pid files. Only these five names are touched.
set -euo pipefail

usage() {
	sed -n 's/^#   bash/  bash/p' "${BASH_SOURCE[0]}" >&2
	exit 2
}

[ $# -ge 2 ] || usage
cmd="$1"
dir="$2"
shift 2

variant="${REFSVC_VARIANT:-release}"
sick=""
pg=""
extra=()
while [ $# -gt 0 ]; do
	case "$1" in
	--variant) variant="${2:?--variant needs a value}"; shift 2 ;;
	--variant=*) variant="${1#*=}"; shift ;;
	--sick) sick="${2:?--sick needs a name}"; shift 2 ;;
	--sick=*) sick="${1#*=}"; shift ;;
	--pg) pg="${2:?--pg needs a URL}"; shift 2 ;;
	--pg=*) pg="${1#*=}"; shift ;;
	--) shift; extra=("$@"); break ;;
	*) echo "rust-cluster: unknown option $1" >&2; usage ;;
	esac
done
case "$variant" in
release | profiling | stripped) ;;
*) echo "rust-cluster: --variant is release, profiling or stripped, not $variant" >&2; exit 2 ;;
esac

offset="${PORT_BASE_OFFSET:-0}"
cache="${PROFCAP_CACHE:-$HOME/.cache/profcap}"
bin="$cache/rust/bin/refsvc-$variant"

# name role rest-port console-port
instances=(
	"orchestration-1 orchestration 8080 6669"
	"orchestration-2 orchestration 8081 6670"
	"worker-rust-1 worker 8100 6671"
	"worker-rust-2 worker 8101 6672"
	"worker-rust-3 worker 8102 6673"
)

alive() {
	# pid exists and is a refsvc process (not a reused pid)
	[ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q refsvc
}

health() {
	# 0 when http://127.0.0.1:PORT/health answers ok
	if command -v curl >/dev/null 2>&1; then
		[ "$(curl -s -m 2 "http://127.0.0.1:$1/health" 2>/dev/null || true)" = ok ]
	else
		local reply
		reply="$(exec 3<>"/dev/tcp/127.0.0.1/$1" 2>/dev/null &&
			printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 &&
			timeout 2 cat <&3 || true)"
		case "$reply" in *$'\r\n\r\nok'*) return 0 ;; *) return 1 ;; esac
	fi
}

start() {
	if [ ! -x "$bin" ]; then
		echo "rust-cluster: $bin not found: run bash scripts/rust-build.sh first" >&2
		exit 1
	fi
	mkdir -p "$dir/.pids" "$dir/.logs"
	local piddir logdir
	piddir="$(cd "$dir/.pids" && pwd)"
	logdir="$(cd "$dir/.logs" && pwd)"
	local started=()
	for line in "${instances[@]}"; do
		read -r name role port console <<<"$line"
		port=$((port + offset))
		console=$((console + offset))
		local pidf="$piddir/$name.pid"
		if [ -f "$pidf" ] && alive "$(cat "$pidf")"; then
			echo "rust-cluster: $name already running (pid $(cat "$pidf"))" >&2
			exit 1
		fi
		local args=(--name "$name" --role "$role" --port "$port" --console "127.0.0.1:$console"
			--pprof --jemalloc-prof --taskdump --pidfile "$pidf")
		[ "$sick" = "$name" ] && args+=(--sick)
		[ -n "$pg" ] && args+=(--pg "$pg")
		[ ${#extra[@]} -gt 0 ] && args+=("${extra[@]}")
		nohup "$bin" "${args[@]}" >"$logdir/$name.log" 2>&1 </dev/null &
		echo "$!" >"$pidf"
		started+=("$name:$port:$!")
	done
	local deadline=$((SECONDS + 30))
	for s in "${started[@]}"; do
		IFS=: read -r name port pid <<<"$s"
		until health "$port"; do
			if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
				echo "rust-cluster: $name (pid $pid, port $port) did not become healthy; log tail:" >&2
				tail -n 20 "$logdir/$name.log" >&2 || true
				exit 1
			fi
			sleep 0.2
		done
		echo "rust-cluster: $name pid $pid http://127.0.0.1:$port ($variant)"
	done
}

stop() {
	local pids=()
	for line in "${instances[@]}"; do
		read -r name _ <<<"$line"
		local pidf="$dir/.pids/$name.pid"
		[ -f "$pidf" ] || continue
		local pid
		pid="$(cat "$pidf")"
		if alive "$pid"; then
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
			echo "rust-cluster: stopping $name (pid $pid)"
		fi
		rm -f "$pidf"
	done
	local deadline=$((SECONDS + 5))
	for pid in "${pids[@]+"${pids[@]}"}"; do
		while alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
		if alive "$pid"; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
}

status() {
	local rc=0
	for line in "${instances[@]}"; do
		read -r name _ port _ <<<"$line"
		port=$((port + offset))
		local pidf="$dir/.pids/$name.pid" pid=""
		[ -f "$pidf" ] && pid="$(cat "$pidf")"
		if alive "$pid" && health "$port"; then
			echo "$name pid $pid port $port ok"
		else
			echo "$name pid ${pid:--} port $port down"
			rc=1
		fi
	done
	return $rc
}

case "$cmd" in
start) start ;;
stop) stop ;;
status) status ;;
*) usage ;;
esac
