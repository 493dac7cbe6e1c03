#!/bin/bash
# appsnap post-script for MySQL / MariaDB: release the read lock the
# pre-script's session holds, and confirm the server took writes again.
#
# What it does
#   Sends UNLOCK TABLES to the session the pre-script left running and waits
#   for the server's answer. appsnap then ends that session's process group.
#   If the session is already gone (appsnap restarted, or the pre-script
#   failed), there is no lock to release and the script succeeds.
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

# Opening the fifo does not block: the session reads it and the holder keeps it open.
printf '%s\n' "UNLOCK TABLES;" "SELECT 'appsnap-unlocked';" >"$fifo"
for ((i = 0; i < 100; i++)); do
  if grep -q '^appsnap-unlocked$' "$out" 2>/dev/null; then
    echo "mysql: tables unlocked"
    exit 0
  fi
  sleep 0.1
done
echo "mysql: UNLOCK TABLES not confirmed within 10s; appsnap ends the session, which releases the lock" >&2
exit 1
