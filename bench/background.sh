#!/usr/bin/env bash
# Device work longer than one call (≤ 10 min) on one warm machine, without a checkpoint round trip.
#   call 1:  bash bench/background.sh start SCRIPT [ARGS...]
#   call 2:  bash bench/background.sh collect          (made at once: the machine stays warm ~30 s)
# `start` runs SCRIPT in its own process session (it outlives the call) with KEEP=/tmp/bg/keep, then
# waits up to WAIT s (default 570); `collect` waits up to WAIT s for it to end. Both copy the files of
# $KEEP (at most 7, ≤ 16 MiB each: the device's limits) and the job's log to $OUT. `start` also runs
# $FALLBACK (a command writing to $OUT, e.g. a split checkpoint) so that a lost machine loses less.
# `collect` on a fresh machine (the warm one was given back) says so and exits with status 4.
set -uo pipefail
STATE=/tmp/bg
KEEP=$STATE/keep
WAIT=${WAIT:-570}
mode=${1:?usage: background.sh start SCRIPT [ARGS...] | collect}
shift
case "$mode" in
  start)
    [ -f "${1:-}" ] || { echo "background.sh start: no script '${1:-}'" >&2; exit 2; }
    rm -rf "$STATE"; mkdir -p "$KEEP"
    KEEP=$KEEP setsid nohup bash -c 'bash "$@"; echo $? > '"$STATE/rc" _ "$@" > "$STATE/log" 2>&1 < /dev/null &
    ;;
  collect)
    [ -d "$STATE" ] || { echo "background.sh collect: no job on this machine (a fresh one: the warm machine was given back)"; exit 4; }
    ;;
  *) echo "background.sh: mode must be start or collect, got '$mode'" >&2; exit 2 ;;
esac
t0=$SECONDS; last=$SECONDS
while [ ! -f "$STATE/rc" ] && [ $((SECONDS - t0)) -lt "$WAIT" ]; do
  sleep 5
  if [ $((SECONDS - last)) -ge 60 ]; then
    last=$SECONDS
    echo "[$((SECONDS - t0)) s] $(tail -n 3 "$STATE/log" | tr '\n' ' ' | cut -c1-400)"
  fi
done
for f in "$KEEP"/*; do [ -f "$f" ] && cp "$f" "$OUT/"; done
tail -c 4000000 "$STATE/log" > "$OUT/job.log"
if [ "$mode" = start ] && [ -n "${FALLBACK:-}" ] && [ ! -f "$STATE/rc" ]; then bash -c "$FALLBACK" || true; fi
if [ -f "$STATE/rc" ]; then echo "job finished, exit status $(cat "$STATE/rc")"; else echo "job still running after $((SECONDS - t0)) s"; fi
ls -la "$OUT"
