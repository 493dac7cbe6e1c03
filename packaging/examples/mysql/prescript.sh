#!/bin/bash
# appsnap pre-script for MySQL / MariaDB: make the snapshot application-consistent.
#
# What it does
#   Starts a background `mysql` client session that runs
#   FLUSH TABLES WITH READ LOCK and FLUSH ENGINE LOGS, waits until the server
#   confirms both, and leaves the session running. appsnap keeps that session
#   (a "lock holder") alive while it freezes the file systems and creates the
#   snapshot group, runs the post-script (which releases the lock), then ends
#   the session. The database is read-only exactly as long as the snapshot
#   needs, and never longer: if appsnap dies, the session dies with its
#   process group and the lock goes with it.
#
# What the database user needs
#   RELOAD (for FLUSH TABLES WITH READ LOCK and FLUSH ENGINE LOGS). On Debian's
#   MariaDB, root connects through the unix socket with no password. Otherwise
#   put credentials in $DEFAULTS_FILE ([client] user=..., password=...), owned
#   by root, mode 0600.
#
# What to change
#   DEFAULTS_FILE, LOCK_WAIT_SECS (how long FTWRL may wait behind long queries
#   before the run falls back to file-system consistency), STATE_DIR.
#
# Install: root-owned, mode 0700, in a root-owned directory (appsnap refuses
# anything else and takes a file-system-consistent snapshot instead).
set -euo pipefail

DEFAULTS_FILE=${DEFAULTS_FILE:-/etc/appsnap/mysql/client.cnf}
LOCK_WAIT_SECS=${LOCK_WAIT_SECS:-20}
STATE_DIR=${STATE_DIR:-/run/appsnap/mysql-${APPSNAP_JOB:-manual}}

client=(mysql --batch --skip-column-names --unbuffered)
[[ -r $DEFAULTS_FILE ]] && client=(mysql "--defaults-extra-file=$DEFAULTS_FILE" --batch --skip-column-names --unbuffered)

install -d -m 0700 "$STATE_DIR"
fifo=$STATE_DIR/session.in
out=$STATE_DIR/session.out
rm -f "$fifo" "$out"
mkfifo -m 0600 "$fifo"

# The session reads SQL from the fifo for as long as a writer holds it open.
"${client[@]}" <"$fifo" >"$out" 2>&1 &
session=$!
exec 3>"$fifo"
# Keep a writer open after this script exits, so the session (and its lock)
# lives until appsnap ends this process group after the post-script.
sleep infinity 3>&3 </dev/null >/dev/null 2>&1 &
echo "$session" >"$STATE_DIR/session.pid"

printf '%s\n' \
  "SET SESSION lock_wait_timeout = $LOCK_WAIT_SECS;" \
  "FLUSH TABLES WITH READ LOCK;" \
  "FLUSH ENGINE LOGS;" \
  "SELECT 'appsnap-locked';" >&3
exec 3>&-

for ((i = 0; i < LOCK_WAIT_SECS * 10 + 50; i++)); do
  if grep -q '^appsnap-locked$' "$out" 2>/dev/null; then
    echo "mysql: tables locked read-only, engine logs flushed (session pid $session)"
    exit 0
  fi
  if ! kill -0 "$session" 2>/dev/null; then
    echo "mysql: the lock session ended before the lock was held:" >&2
    cat "$out" >&2
    exit 1
  fi
  sleep 0.1
done
echo "mysql: no read lock within ${LOCK_WAIT_SECS}s (long-running queries?); snapshot will be file-system-consistent" >&2
cat "$out" >&2
exit 1
