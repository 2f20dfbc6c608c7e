# Source it: . scripts/env.sh
# Gives this shell the PATH and PROFCAP_CACHE that make test gives the tests,
# so that go test run by hand finds the tools scripts/setup.sh installed.
export PROFCAP_CACHE="${PROFCAP_CACHE:-${HOME:-/root}/.cache/profcap}"
case ":$PATH:" in
*":$PROFCAP_CACHE/cargo/bin:"*) ;;
*) export PATH="$PROFCAP_CACHE/cargo/bin:$PROFCAP_CACHE/venv/bin:$PROFCAP_CACHE/npm/node_modules/.bin:$PATH" ;;
esac
