#!/bin/sh
# Written by benches/boot.py: no fork server, so ferrocorn starts workers as fresh interpreters.
if [ "$2" = ferrocorn-forkserver ]; then exit 1; fi
exec /work/main/.venv-bench/bin/python "$@"
