#!/bin/bash
# appsnap post-script for MariaDB / MySQL: release the lock the pre-script's
# session holds, and confirm the server took writes again.
#
# What it does
#   Sends BACKUP STAGE END or UNLOCK TABLES (whichever lock the pre-script
#   took) to the session the pre-script left running and waits for the
#   server's answer. appsnap then ends that session's process group. If the
#   session is already gone (appsnap restarted, or the pre-script failed),
#   there is no lock to release and the script succeeds.
#
# What the database user needs: nothing beyond the pre-script's.
# What to change: STATE_DIR must match the pre-script's.
set -euo pipefail

STATE_DIR=${STATE_DIR:-/run/appsnap/mysql-${APPSNAP_JOB:-manual}}
fifo=$STATE_DIR/session.in
out=$STATE_DIR/session.out

if [[ ! -p $fifo ]] || ! kill -0 "$(cat "$STATE_DIR/session.pid" 2>/dev/null || echo 0)" 2>/dev/null; then
  echo "mysql: no lock session running; nothing to release"
  exit 0
fi

method=$(cat "$STATE_DIR/method" 2>/dev/null || echo ftwrl)
if [[ $method == backup-stage ]]; then
  release="BACKUP STAGE END;"
else
  release="UNLOCK TABLES;"
fi
# Opening the fifo does not block: the session reads it and the holder keeps it open.
printf '%s\n' "$release" "SELECT 'appsnap-unlocked';" >"$fifo"
for ((i = 0; i < 500; i++)); do
  if grep -q '^appsnap-unlocked$' "$out" 2>/dev/null; then
    echo "mysql: ${release%;} done; writes resume"
    exit 0
  fi
  sleep 0.02
done
echo "mysql: ${release%;} not confirmed within 10s; appsnap ends the session, which releases the lock" >&2
exit 1
