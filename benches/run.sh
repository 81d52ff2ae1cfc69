#!/usr/bin/env bash
# Set up a fresh Debian machine and run the ferrocorn benchmark (benches/compare.py), or with
# --containment first, the leak-containment benchmark (benches/containment.py), with --boot the
# worker boot cost (benches/boot.py), with --memory the memory per worker (benches/memory.py), with --precision the requests each
# retired worker served under max-requests (benches/precision.py).
#
#   benches/run.sh [compare.py options]      e.g. benches/run.sh --duration 5 --apps flask
#   benches/run.sh --containment [containment.py options]   e.g. --duration 20 --rows ferrocorn
#   benches/run.sh --boot [boot.py options]                 e.g. --boots 20 --modes preload,gunicorn-preload
#   benches/run.sh --memory [memory.py options]             e.g. --workers 4 --servers ferrocorn-preload
#   benches/run.sh --precision [precision.py options]       e.g. --clients 8 --requests 4000
#
# Installs wrk with apt-get if missing (needs root), creates .venv-bench with flask, gunicorn,
# granian and gevent (benchmark-only; never dependencies of ferrocorn), builds ferrocorn in release
# mode, then runs compare.py (or containment.py, boot.py, memory.py). BENCH_SKIP_BUILD=1 skips
# the cargo build.
set -euo pipefail

SCRIPT=benches/compare.py
case "${1:-}" in
    --containment) SCRIPT=benches/containment.py; shift ;;
    --boot) SCRIPT=benches/boot.py; shift ;;
    --memory) SCRIPT=benches/memory.py; shift ;;
    --precision) SCRIPT=benches/precision.py; shift ;;
esac

cd "$(dirname "$0")/.."
VENV=.venv-bench

apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "run.sh: need $* but not root: sudo apt-get install -y $*" >&2
        exit 2
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y "$@" || { apt-get update && apt-get install -y "$@"; }
}

# only compare.py uses wrk; the others send their few requests from Python
[ "$SCRIPT" != benches/compare.py ] || command -v wrk >/dev/null || apt_install wrk
command -v python3 >/dev/null || apt_install python3 python3-venv

if ! "$VENV/bin/python" -c 'import flask, gunicorn, granian, gevent, packaging' 2>/dev/null; then
    # Debian's python3 has no ensurepip without python3-venv.
    python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && python3 -m venv --clear "$VENV"; }
    "$VENV/bin/pip" install --quiet flask gunicorn granian gevent packaging
fi

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    if ! command -v cargo >/dev/null; then
        echo "run.sh: cargo not found: install Rust from https://rustup.rs, or set BENCH_SKIP_BUILD=1" >&2
        exit 2
    fi
    cargo build --release || {
        echo "run.sh: cargo build --release failed; fix it, or set BENCH_SKIP_BUILD=1 to benchmark" \
             "without building (ferrocorn is then reported as failed to start if it has no binary)" >&2
        exit 1
    }
fi

exec "$VENV/bin/python" "$SCRIPT" "$@"
