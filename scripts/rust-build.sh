# Builds the Rust reference service (rust/) and puts the artifacts in a stable place:
#
#   $PROFCAP_CACHE/rust/bin/refsvc-release    release profile: optimised, .symtab + line tables, no frame pointers
#   $PROFCAP_CACHE/rust/bin/refsvc-stripped   the release binary through `strip` (no symbols)
#   $PROFCAP_CACHE/rust/bin/refsvc-profiling  profiling profile: release + full debug info + frame pointers
#   $PROFCAP_CACHE/rust/bin/libworker_core.so worker-core cdylib, profiling build (frame pointers)
#
# PROFCAP_CACHE defaults to $HOME/.cache/profcap. Cargo builds into
# $PROFCAP_CACHE/rust-target (release/ and profiling/ below it), outside the work
# tree, so a fresh clone in another folder reuses the compiled dependencies.
# Idempotent: a second run with nothing changed only checks and takes seconds.
# Installs nothing; needs cargo (rustup) and strip (binutils).
#
# usage: bash scripts/rust-build.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${PROFCAP_CACHE:-$HOME/.cache/profcap}"
target="$cache/rust-target"
bin="$cache/rust/bin"

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
	# shellcheck disable=SC1091
	. "$HOME/.cargo/env"
fi
for tool in cargo strip; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "rust-build: $tool not found (cargo: rustup; strip: binutils)" >&2
		exit 1
	fi
done

# The same cfgs as rust/.cargo/config.toml: a RUSTFLAGS variable replaces that
# list, so every build here sets RUSTFLAGS explicitly (and identically for
# release, so a plain `cargo build --release` in rust/ with the same
# CARGO_TARGET_DIR shares its cache).
tokio_cfgs="--cfg tokio_unstable --cfg tokio_taskdump"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# install_file SRC DST: copy to a temporary name and rename over DST, so a
# process still running the old DST keeps its file (cp over a running binary
# fails with "Text file busy"); skipped when DST already has the same bytes.
install_file() {
	if [ -f "$2" ] && cmp -s "$1" "$2"; then
		return 0
	fi
	cp "$1" "$2.tmp.$$"
	mv -f "$2.tmp.$$" "$2"
}

t_all="$(now)"
mkdir -p "$target" "$bin"
cd "$root/rust"

echo "rust-build: release build (CARGO_TARGET_DIR=$target)"
t="$(now)"
CARGO_TARGET_DIR="$target" RUSTFLAGS="$tokio_cfgs" \
	cargo build --locked -j 2 --release --workspace
echo "rust-build: release build took $(elapsed "$t") s"

echo "rust-build: profiling build (frame pointers, full debug info)"
t="$(now)"
CARGO_TARGET_DIR="$target" RUSTFLAGS="$tokio_cfgs -C force-frame-pointers=yes" \
	cargo build --locked -j 2 --profile profiling --workspace
echo "rust-build: profiling build took $(elapsed "$t") s"

install_file "$target/release/refsvc" "$bin/refsvc-release"
install_file "$target/profiling/refsvc" "$bin/refsvc-profiling"
install_file "$target/profiling/libworker_core.so" "$bin/libworker_core.so"
strip -o "$bin/refsvc-stripped.new.$$" "$bin/refsvc-release"
install_file "$bin/refsvc-stripped.new.$$" "$bin/refsvc-stripped"
rm -f "$bin/refsvc-stripped.new.$$"
chmod 755 "$bin/refsvc-release" "$bin/refsvc-stripped" "$bin/refsvc-profiling"
cp -f "$root/rust/worker-core/include/worker_core.h" "$bin/worker_core.h.tmp.$$"
mv -f "$bin/worker_core.h.tmp.$$" "$bin/worker_core.h"

echo "rust-build: artifacts in $bin:"
for f in refsvc-release refsvc-stripped refsvc-profiling libworker_core.so worker_core.h; do
	printf '  %-20s %10s bytes\n' "$f" "$(stat -c %s "$bin/$f")"
done
echo "rust-build: done in $(elapsed "$t_all") s"
