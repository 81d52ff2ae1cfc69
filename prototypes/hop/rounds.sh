#!/bin/sh
# Interleaved rounds for docs/design/hop.md (throwaway). Usage:
#   prototypes/hop/rounds.sh ROUNDS APP VARIANT...
# APP: flask | wsgi. VARIANT: ferrocorn | granian | granian-bt1 | sock-dDEPTH | shm-dDEPTH-sSPIN[-marshal][-nofence]
# Each run: prototypes/hop/measure.py (wrk -t1 -c50 -d10s --latency after a 2 s warm-up).
set -eu
cd "$(dirname "$0")"
PY=/work/main/.venv/bin/python
BENCH=/work/main/.venv-bench/bin
rounds=$1; app=$2; shift 2
case $app in
  flask) spec=examples.flask_app:app ;;
  wsgi) spec=examples.wsgi_hello:app ;;
esac
port=18200
r=1
while [ "$r" -le "$rounds" ]; do
  for v in "$@"; do
    port=$((port + 1))
    case $v in
      ferrocorn) cmd="target/release/ferrocorn -w 2 -b 127.0.0.1:$port --python $PY $spec" ;;
      granian) cmd="$BENCH/granian --interface wsgi --workers 2 --host 127.0.0.1 --port $port $spec" ;;
      granian-bt1) cmd="$BENCH/granian --interface wsgi --workers 2 --blocking-threads 1 --host 127.0.0.1 --port $port $spec" ;;
      sock-d*) d=${v#sock-d}; cmd="prototypes/hop/target/release/hopbench sock $port 2 $d 0 split $PY $spec" ;;
      shm-*)
        rest=${v#shm-d}; d=${rest%%-*}; rest=${rest#*-s}; s=${rest%%-*}
        env=split; case $v in *-marshal*) env=marshal ;; esac
        fence=1; case $v in *-nofence*) fence=0 ;; esac
        cmd="env HOP_FENCE=$fence prototypes/hop/target/release/hopbench shm $port 2 $d $s $env $PY $spec" ;;
    esac
    python3 measure.py "$app-$v-r$r" "$port" /hello -- $cmd || true
  done
  r=$((r + 1))
done
