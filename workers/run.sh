#!/usr/bin/env bash
# Starts or stops the FFI workers: three processes that embed the Rust worker
# core (rust/worker-core, libworker_core.so) and call it in a loop of steps,
# laid out like the reference cluster's Python, Ruby and TypeScript workers.
#
#   name             how it runs                                  REST (/health, /stats)
#   worker-python-1  uv run (workers/python, uv.lock) → python    8300
#   worker-ruby-1    ruby workers/ruby/worker.rb (Fiddle)         8200
#   worker-ts-1      bun workers/ts/worker.ts (bun:ffi)           8400
#
# Each writes DIR/.pids/NAME.pid and DIR/.logs/NAME.log. The Python worker's
# pid file names the `uv` process (its child runs python), as the reference
# cluster's scripts do. The Bun worker writes JavaScriptCore's jitdump into
# DIR/.jit (BUN_JSC_useJITDump), from which profcap names JS frames.
#
# usage:
#   bash workers/run.sh start DIR [NAME...]
#   bash workers/run.sh stop DIR [NAME...]
#   bash workers/run.sh status DIR
#
# Environment: PYTHON_PORT (8300), RUBY_PORT (8200), TS_PORT (8400);
# PORT_BASE_OFFSET (0) is added to each; WORKER_CORE_LIB (default
# $PROFCAP_CACHE/rust/bin/libworker_core.so, built by scripts/rust-build.sh);
# WORKER_PYTHON (the interpreter uv runs: /usr/bin/python3 where it exists,
# else python3 on PATH); WORKER_STEPS_PER_SEC, WORKER_ITERATIONS,
# WORKER_PAYLOAD, WORKER_BLOCK_MS pass through to every worker. The tools come
# from PATH (. scripts/env.sh). `start` returns once every worker answers
# /health (exit 1 with the log's tail if one does not within 30 s); `stop`
# sends SIGTERM by pid file (to uv's process group for the Python worker),
# SIGKILL after 5 s, and removes the pid files.
set -euo pipefail

usage() {
	sed -n 's/^#   bash/  bash/p' "${BASH_SOURCE[0]}" >&2
	exit 2
}
[ $# -ge 2 ] || usage
cmd=$1
dir=$2
shift 2
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${PROFCAP_CACHE:-${HOME:-/root}/.cache/profcap}"
offset="${PORT_BASE_OFFSET:-0}"
all=(worker-python-1 worker-ruby-1 worker-ts-1)
names=("$@")
((${#names[@]})) || names=("${all[@]}")

port_of() {
	case "$1" in
	worker-python-1) echo $((${PYTHON_PORT:-8300} + offset)) ;;
	worker-ruby-1) echo $((${RUBY_PORT:-8200} + offset)) ;;
	worker-ts-1) echo $((${TS_PORT:-8400} + offset)) ;;
	*) echo "workers: unknown worker $1 (one of ${all[*]})" >&2; exit 2 ;;
	esac
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

health() {
	if command -v curl >/dev/null 2>&1; then
		[ "$(curl -s -m 2 "http://127.0.0.1:$1/health" 2>/dev/null || true)" = ok ]
	else
		exec 3<>"/dev/tcp/127.0.0.1/$1" 2>/dev/null || return 1
		printf 'GET /health HTTP/1.0\r\n\r\n' >&3
		grep -q '^ok' <&3
		local rc=$?
		exec 3>&-
		return $rc
	fi
}

start_one() {
	local name=$1 port pidfile log
	port=$(port_of "$name")
	pidfile="$dir/.pids/$name.pid"
	log="$dir/.logs/$name.log"
	if [ -f "$pidfile" ] && alive "$(cat "$pidfile")"; then
		echo "workers: $name already running (pid $(cat "$pidfile"))"
		return 0
	fi
	export WORKER_NAME=$name WORKER_PORT=$port WORKER_CORE_LIB=$lib PROFCAP_CACHE=$cache
	case "$name" in
	worker-python-1)
		local py=${WORKER_PYTHON:-}
		[ -n "$py" ] || { [ -x /usr/bin/python3 ] && py=/usr/bin/python3; } || py=$(command -v python3)
		# The worker's source is tracked as worker.py.txt (the repository
		# tracks no executable scripts); it runs as DIR/.run/worker.py, so
		# its frames read worker.py:LINE.
		mkdir -p "$dir/.run"
		cp "$root/workers/python/worker.py.txt" "$dir/.run/worker.py"
		# uv run: the locked virtual project, no network, no downloaded
		# interpreters; the environment lives in DIR, not in the work tree.
		UV_PROJECT_ENVIRONMENT="$dir/.venvs/$name" UV_PYTHON_DOWNLOADS=never \
			uv run --project "$root/workers/python" --frozen --offline --python "$py" \
			python "$dir/.run/worker.py" >"$log" 2>&1 </dev/null &
		;;
	worker-ruby-1)
		ruby "$root/workers/ruby/worker.rb" >"$log" 2>&1 </dev/null &
		;;
	worker-ts-1)
		mkdir -p "$dir/.jit"
		BUN_JSC_useJITDump=1 BUN_JSC_jitDumpDirectory="$dir/.jit" \
			bun "$root/workers/ts/worker.ts" >"$log" 2>&1 </dev/null &
		;;
	esac
	echo $! >"$pidfile"
	echo "workers: $name started (pid $!, port $port, log $log)"
}

stop_one() {
	local name=$1 pidfile="$dir/.pids/$1.pid" pid
	[ -f "$pidfile" ] || return 0
	pid=$(cat "$pidfile")
	if alive "$pid"; then
		# uv forwards SIGTERM to python; its children are signalled too in
		# case uv is gone first.
		local kids
		kids=$(pgrep -P "$pid" 2>/dev/null || true)
		kill -TERM "$pid" $kids 2>/dev/null || true
		for _ in $(seq 50); do
			alive "$pid" || break
			sleep 0.1
		done
		alive "$pid" && kill -KILL "$pid" $kids 2>/dev/null || true
		echo "workers: $name stopped (pid $pid)"
	fi
	rm -f "$pidfile"
}

case "$cmd" in
start)
	lib=${WORKER_CORE_LIB:-$cache/rust/bin/libworker_core.so}
	[ -f "$lib" ] || { echo "workers: $lib not found: build it with bash scripts/rust-build.sh" >&2; exit 1; }
	for tool in uv ruby bun; do
		command -v "$tool" >/dev/null 2>&1 || { echo "workers: $tool not on PATH (make setup installs it; . scripts/env.sh)" >&2; exit 1; }
	done
	mkdir -p "$dir/.pids" "$dir/.logs"
	dir=$(cd "$dir" && pwd)
	for n in "${names[@]}"; do start_one "$n"; done
	for n in "${names[@]}"; do
		port=$(port_of "$n")
		ok=0
		for _ in $(seq 300); do
			if health "$port"; then ok=1; break; fi
			alive "$(cat "$dir/.pids/$n.pid")" || break
			sleep 0.1
		done
		if ((!ok)); then
			echo "workers: $n did not answer http://127.0.0.1:$port/health; last lines of $dir/.logs/$n.log:" >&2
			tail -n 20 "$dir/.logs/$n.log" >&2
			exit 1
		fi
	done
	echo "workers: ${names[*]} healthy"
	;;
stop)
	for n in "${names[@]}"; do stop_one "$n"; done
	rm -rf "$dir/.jit"
	;;
status)
	for n in "${names[@]}"; do
		pid=$(cat "$dir/.pids/$n.pid" 2>/dev/null || true)
		if alive "$pid" && health "$(port_of "$n")"; then echo "$n: running (pid $pid)"; else echo "$n: not running"; fi
	done
	;;
*) usage ;;
esac
