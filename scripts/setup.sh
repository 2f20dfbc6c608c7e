# Run as: bash scripts/setup.sh        (make setup, make test)
#
# Installs every real part the test suite drives: Debian packages (perf,
# Chromium, clang/libbpf, PostgreSQL, nginx, Ruby, wrk, ...), samply and
# rbspy (cargo), py-spy and uv (pip, in a venv), Bun (npm), and the Rust
# workspace (scripts/rust-build.sh, when present). Idempotent and cached:
# each step checks first (version of the installed command, dpkg status, or
# a stamp under $PROFCAP_CACHE) and is skipped when satisfied, so a rerun
# takes about a second and prints nothing. A step that installs something
# prints what and how long it took; its full output goes to
# $PROFCAP_CACHE/logs/STEP.log, whose tail is printed if it fails.
#
# The tests find the tools through the PATH that the Makefile exports (and
# scripts/env.sh, for running go test by hand):
#   $PROFCAP_CACHE/cargo/bin:$PROFCAP_CACHE/venv/bin:$PROFCAP_CACHE/npm/node_modules/.bin
#
# Not root and no sudo: the Debian step says what is missing and goes on
# (the tests that need it then skip; with CI=true they fail).
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned versions. samply and rbspy are the newest releases on crates.io as
# of 2026-12 (both build with Rust 1.95; rust-version 1.77 and 1.85).
SAMPLY_VERSION=0.13.1
RBSPY_VERSION=0.55.0
PYSPY_VERSION=0.4.3
UV_VERSION=0.13.9
BUN_VERSION=1.4.5

DEBS=(linux-perf chromium fonts-liberation gcc libc6-dev clang llvm libbpf-dev bpftool
	postgresql nginx ruby ruby-dev wrk hyperfine binutils procps)

CACHE=${PROFCAP_CACHE:-${HOME:-/root}/.cache/profcap}
export PROFCAP_CACHE=$CACHE
mkdir -p "$CACHE/stamps" "$CACHE/logs"
# One set-up at a time (two make test runs side by side).
exec 9>"$CACHE/.setup.lock"
flock 9

total_start=$SECONDS
did=0

# step NAME COMMAND...: run COMMAND with its output in logs/NAME.log, print
# how long it took; on failure print the log's tail and stop.
step() {
	local name=$1 start=$SECONDS
	shift
	did=1
	if "$@" >"$CACHE/logs/$name.log" 2>&1; then
		echo "setup: $name: done in $((SECONDS - start))s"
	else
		local rc=$?
		echo "setup: $name: FAILED after $((SECONDS - start))s (exit $rc); last lines of $CACHE/logs/$name.log:" >&2
		tail -n 30 "$CACHE/logs/$name.log" >&2
		exit "$rc"
	fi
}

# ---- Debian packages --------------------------------------------------------
as_root() {
	if [ "$(id -u)" = 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		sudo -n "$@"
	else
		return 77
	fi
}

apt_install() {
	export DEBIAN_FRONTEND=noninteractive
	as_root apt-get update -qq || return $?
	# A package this release does not have (bpftool is in bookworm, but not
	# in every Debian) is left out rather than failing the install.
	local have=() p
	for p in "$@"; do
		if apt-cache show "$p" >/dev/null 2>&1; then have+=("$p"); else echo "not in this Debian release, skipped: $p"; fi
	done
	((${#have[@]})) || return 0
	# No daemon starts from a package's install (nginx on :80, a PostgreSQL
	# cluster): the tests start their own servers.
	local policy=/usr/sbin/policy-rc.d added=0
	if [ ! -e "$policy" ]; then
		as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy" && added=1
	fi
	local rc=0
	as_root apt-get install -y -q --install-recommends "${have[@]}" || rc=$?
	((added)) && as_root rm -f "$policy"
	return "$rc"
}

missing=()
while read -r pkg status; do
	[ "$status" = ii ] || missing+=("$pkg")
done < <(for p in "${DEBS[@]}"; do
	s=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
	echo "$p ${s:0:2}"
done)
if ((${#missing[@]})); then
	echo "setup: debian: installing ${missing[*]}"
	start=$SECONDS
	rc=0
	apt_install "${missing[@]}" >"$CACHE/logs/debian.log" 2>&1 || rc=$?
	if [ "$rc" = 77 ]; then
		echo "setup: debian: not root and no sudo: install by hand: apt-get install ${missing[*]}" >&2
		[ "${CI:-}" = true ] && exit 1
	elif [ "$rc" != 0 ]; then
		echo "setup: debian: FAILED after $((SECONDS - start))s; last lines of $CACHE/logs/debian.log:" >&2
		tail -n 30 "$CACHE/logs/debian.log" >&2
		exit "$rc"
	else
		grep '^not in this Debian release' "$CACHE/logs/debian.log" | sed 's/^/setup: debian: /' || true
		echo "setup: debian: done in $((SECONDS - start))s"
	fi
	did=1
fi

# ---- Rust tools (cargo install, built from crates.io) -----------------------
# version_is BIN WANT: BIN --version prints WANT as its second word.
version_is() {
	[ -x "$1" ] && [ "$("$1" --version 2>/dev/null | head -n 1 | awk '{print $2}')" = "$2" ]
}

cargo_tool() { # NAME VERSION
	local bin="$CACHE/cargo/bin/$1"
	version_is "$bin" "$2" && return 0
	echo "setup: cargo: installing $1 $2 (built from source: minutes)"
	step "cargo-$1" cargo install --locked --force --root "$CACHE/cargo" "$1@$2"
	version_is "$bin" "$2" || { echo "setup: cargo: $bin --version is not $2" >&2; exit 1; }
}
if ! command -v cargo >/dev/null 2>&1; then
	echo "setup: cargo is not on PATH: samply and rbspy are not installed" >&2
	[ "${CI:-}" = true ] && exit 1
else
	cargo_tool samply "$SAMPLY_VERSION"
	cargo_tool rbspy "$RBSPY_VERSION"
fi

# ---- Python tools (pip wheels into a venv) ----------------------------------
venv=$CACHE/venv
if ! { "$venv/bin/python" -c '' 2>/dev/null && version_is "$venv/bin/py-spy" "$PYSPY_VERSION" && version_is "$venv/bin/uv" "$UV_VERSION"; }; then
	echo "setup: pip: installing py-spy $PYSPY_VERSION and uv $UV_VERSION into $venv"
	pip_install() {
		# A venv whose interpreter went away (python upgraded) is made anew.
		"$venv/bin/python" -c '' 2>/dev/null || { rm -rf "$venv" && python3 -m venv "$venv"; }
		"$venv/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: \
			"py-spy==$PYSPY_VERSION" "uv==$UV_VERSION"
	}
	step pip pip_install
fi

# ---- Bun (npm package with the native binary) -------------------------------
# Installed to a scratch prefix and moved in only if the binary runs here; if
# it cannot, nothing is installed, the reason is printed once and remembered
# in a stamp (delete $CACHE/stamps/bun-* to try again).
npm_prefix=$CACHE/npm
bun_stamp=$CACHE/stamps/bun-$BUN_VERSION-cannot-run
if ! [ "$("$npm_prefix/node_modules/.bin/bun" --version 2>/dev/null)" = "$BUN_VERSION" ] && [ ! -e "$bun_stamp" ]; then
	if ! command -v npm >/dev/null 2>&1; then
		echo "setup: npm is not on PATH: Bun is not installed" >&2
		[ "${CI:-}" = true ] && exit 1
	else
		echo "setup: npm: installing bun $BUN_VERSION"
		start=$SECONDS
		tmp="$CACHE/npm.new"
		rm -rf "$tmp"
		if ! npm install --prefix "$tmp" --no-audit --no-fund --loglevel=error "bun@$BUN_VERSION" >"$CACHE/logs/npm-bun.log" 2>&1; then
			echo "setup: npm: FAILED after $((SECONDS - start))s; last lines of $CACHE/logs/npm-bun.log:" >&2
			tail -n 30 "$CACHE/logs/npm-bun.log" >&2
			rm -rf "$tmp"
			exit 1
		fi
		if got=$("$tmp/node_modules/.bin/bun" --version 2>&1) && [ "$got" = "$BUN_VERSION" ]; then
			rm -rf "$npm_prefix" && mv "$tmp" "$npm_prefix"
			echo "setup: npm: done in $((SECONDS - start))s"
		else
			rm -rf "$tmp"
			printf 'bun %s from npm does not run here: %s\n' "$BUN_VERSION" "$got" >"$bun_stamp"
			echo "setup: npm: bun $BUN_VERSION installs but does not run here, so it is not installed (Node $(node --version 2>/dev/null) serves instead): $got" >&2
		fi
		did=1
	fi
fi

# ---- The Rust workspace (the real Rust services the tests profile) ----------
if [ -f scripts/rust-build.sh ]; then
	start=$SECONDS
	# rust-build.sh keeps its own cache (a no-op build takes seconds); its
	# output is shown only when it takes long enough to have built something.
	if bash scripts/rust-build.sh >"$CACHE/logs/rust-build.log" 2>&1; then
		if ((SECONDS - start >= 5)); then
			echo "setup: rust workspace (scripts/rust-build.sh): done in $((SECONDS - start))s"
			did=1
		fi
	else
		rc=$?
		echo "setup: rust workspace (scripts/rust-build.sh): FAILED after $((SECONDS - start))s (exit $rc); last lines of $CACHE/logs/rust-build.log:" >&2
		tail -n 30 "$CACHE/logs/rust-build.log" >&2
		exit "$rc"
	fi
fi

# ---- Grafana Pyroscope (a real server for the push and verify tests) ------
# Built from the Go module proxy; the first build takes 10-20 minutes.
if [ -f scripts/pyroscope-build.sh ]; then
	if ! [ -x "$CACHE/pyroscope/bin/pyroscope-v1.21.1" ] || ! [ -x "$CACHE/pyroscope/bin/pyroscope-v1.6.0" ]; then
		step pyroscope bash scripts/pyroscope-build.sh
		did=1
	fi
fi

if ((did)); then
	echo "setup: all done in $((SECONDS - total_start))s (PROFCAP_CACHE=$CACHE)"
fi
