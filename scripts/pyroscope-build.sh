# Builds Grafana Pyroscope servers for the tests that push to a real one
# (pyroscope/realserver_test.go, cmd/profcap/push_real_test.go):
#
#   $PROFCAP_CACHE/pyroscope/bin/pyroscope-v1.21.1
#   $PROFCAP_CACHE/pyroscope/bin/pyroscope-v1.6.0
#
# PROFCAP_CACHE defaults to $HOME/.cache/profcap. Source comes from the Go
# module proxy alone (go mod download), nothing else:
#
#   - the module zip of github.com/grafana/pyroscope@VERSION is copied to
#     $PROFCAP_CACHE/pyroscope/src-VERSION (the module cache is read-only) and
#     its go.work removed;
#   - its go.mod replaces github.com/grafana/pyroscope/api with ./api, which
#     the zip lacks (a nested module); the replacement points at the api
#     module of the same Go files instead (API_VERSION below);
#   - -ldflags=-checklinkname=0: parquet-go links runtime.aeshash through
#     go:linkname, which Go 1.23+ refuses without the flag; -X sets the
#     version the server reports (the module zip has no git metadata).
#
# Idempotent: a binary already there that reports its version is kept
# (delete it to rebuild); the first build takes 10 to 25 minutes on a
# 2-core machine (16 minutes measured for v1.21.1 on a loaded one), a rerun
# a second.
# Prints how long each build took. Installs nothing else; needs go.
#
# usage: bash scripts/pyroscope-build.sh [VERSION...]   (default: v1.21.1 v1.6.0)
set -euo pipefail

cache="${PROFCAP_CACHE:-$HOME/.cache/profcap}"
bin="$cache/pyroscope/bin"
mkdir -p "$bin" "$cache/logs"

# The api module that carries the server tag's api/ (v1.21.1: api v1.5.0,
# the same Go files), or the nearest one with a patch (patch_source).
api_version() {
	case "$1" in
	v1.21.1) echo v1.5.0 ;;
	v1.6.0) echo v1.0.0 ;;
	*) echo "pyroscope-build: no api module version known for $1 (add it to api_version)" >&2; return 1 ;;
	esac
}

# patch_source VERSION: what a tag needs beyond the api replacement.
#   v1.6.0: no api module has its tag's api/ (v0.4.0 lacks adhocprofiles
#   and vcs, v1.0.0 adds VCSService.GetCommits), so v1.0.0 is used and
#   GetCommits answers "unimplemented" (VCS integration only: ingestion
#   and queries are v1.6.0's own). godeltaprof v0.1.7 registers a
#   /debug/pprof/ path that Go 1.22+'s ServeMux refuses beside
#   net/http/pprof's: the binary keeps the Go 1.21 mux (httpmuxgo121).
patch_source() {
	case "$1" in
	v1.6.0)
		local spec dir name recv
		for spec in pkg/querier/vcs:vcs:Service pkg/frontend:frontend:Frontend; do
			IFS=: read -r dir name recv <<<"$spec"
			cat >"$dir/zz_profcap_stubs.go" <<STUB
package $name

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	vcsv1 "github.com/grafana/pyroscope/api/gen/proto/go/vcs/v1"
)

// GetCommits is in api v1.0.0 but not in Pyroscope v1.6.0 (added by
// profcap's scripts/pyroscope-build.sh).
func (*$recv) GetCommits(context.Context, *connect.Request[vcsv1.GetCommitsRequest]) (*connect.Response[vcsv1.GetCommitsResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("GetCommits is not in Pyroscope v1.6.0"))
}
STUB
		done
		go mod edit -godebug=httpmuxgo121=1
		;;
	esac
}

build() {
	local v=$1 out="$bin/pyroscope-$1" src="$cache/pyroscope/src-$1" api start=$SECONDS dir json rev
	# A binary that says its version is done (-version prints
	# "pyroscope, version 1.21.1 (branch: ..., revision: ...)").
	if [ -x "$out" ] && "$out" -version 2>/dev/null | grep -q "version ${v#v} "; then
		return 0
	fi
	api=$(api_version "$v")
	echo "pyroscope-build: building pyroscope $v (api $api) into $out; 10-25 minutes the first time"
	export GOWORK=off GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
	json=$(cd /tmp && go mod download -json "github.com/grafana/pyroscope@$v")
	dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")
	rev=$(sed -n 's/^[[:space:]]*"Hash": "\(.*\)",$/\1/p' <<<"$json")
	if [ -z "$dir" ] || [ ! -f "$dir/go.mod" ]; then
		echo "pyroscope-build: go mod download github.com/grafana/pyroscope@$v gave no source" >&2
		return 1
	fi
	rm -rf "$src.tmp"
	cp -r "$dir" "$src.tmp"
	chmod -R u+w "$src.tmp"
	rm -f "$src.tmp/go.work" "$src.tmp/go.work.sum"
	rm -rf "$src"
	mv "$src.tmp" "$src"
	(
		cd "$src"
		go mod edit -replace "github.com/grafana/pyroscope/api=github.com/grafana/pyroscope/api@$api"
		patch_source "$v"
		# The version and revision the server reports at
		# /api/v1/status/buildinfo (what profcap push records of it);
		# the Makefile's release builds set them the same way.
		pkg=github.com/grafana/pyroscope/pkg/util/build
		go build -mod=mod -trimpath -o "$out.tmp.$$" \
			-ldflags="-checklinkname=0 -X $pkg.Version=${v#v} -X $pkg.Revision=${rev:0:12} -X $pkg.Branch=module-zip" \
			./cmd/pyroscope
	)
	mv -f "$out.tmp.$$" "$out"
	echo "pyroscope-build: pyroscope $v built in $((SECONDS - start))s"
}

versions=("$@")
((${#versions[@]})) || versions=(v1.21.1 v1.6.0)
for v in "${versions[@]}"; do
	build "$v"
done
