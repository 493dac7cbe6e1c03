#!/bin/bash
# appsnap pre-script for MariaDB / MySQL: make the snapshot application-consistent.
#
# What it does
#   Starts a background `mysql` client session that takes the lock, waits
#   until the server confirms it, records the binary log position on the
#   snapshot, and leaves the session running. appsnap keeps that session (a
#   "lock holder") alive while it freezes the file systems and creates the
#   snapshot group, runs the post-script (which releases the lock), then
#   ends the session. If appsnap dies, the session dies with its process
#   group and the lock goes with it.
#
#   The lock, by LOCK_METHOD:
#   - backup-stage (MariaDB 10.4 and later; what `auto` picks there):
#     BACKUP STAGE START, FLUSH, BLOCK_DDL, BLOCK_COMMIT, held until the
#     post-script's BACKUP STAGE END. Commits and DDL wait; reads go on, and
#     so do INSERT/UPDATE/DELETE inside open transactions until they commit.
#     A long-running SELECT does not delay it.
#   - ftwrl (MySQL, older MariaDB; `auto` picks it there): FLUSH TABLES WITH
#     READ LOCK and FLUSH ENGINE LOGS, held until UNLOCK TABLES. Every write
#     waits, and the lock itself waits behind any long-running query, while
#     blocking the writers queued behind it.
#   Either way the wait for the lock is bounded by LOCK_WAIT_SECS (the
#   server's lock_wait_timeout, and this script's own limit, after which it
#   kills the waiting statement): the script then fails, and the run follows
#   the job's `on_prescript_failure` ("fs": a file-system-consistent
#   snapshot; "skip": no snapshot at all).
#
# What it records
#   When appsnap passes APPSNAP_TAGS_FILE (appsnap 0.x and later), it writes
#   the position the snapshot holds, read while commits are blocked:
#     appsnap:binlog=<binary log file>:<position>   (only with log_bin on)
#     appsnap:gtid=<gtid_binlog_pos>                (MariaDB, when not empty)
#   appsnap puts them as tags on the snapshot group and its snapshots, so a
#   restored copy can rejoin replication or start a point-in-time recovery.
#
# What the database user needs
#   RELOAD (FLUSH TABLES WITH READ LOCK, FLUSH ENGINE LOGS, BACKUP STAGE),
#   and REPLICATION CLIENT / BINLOG MONITOR for the position. On Debian's
#   MariaDB, root connects through the unix socket with no password.
#   Otherwise put credentials in $DEFAULTS_FILE ([client] user=...,
#   password=...), owned by root, mode 0600.
#
# What to change
#   DEFAULTS_FILE, LOCK_METHOD (auto, backup-stage, ftwrl), LOCK_WAIT_SECS,
#   STATE_DIR.
#
# Install: root-owned, mode 0700, in a root-owned directory (appsnap refuses
# anything else).
set -euo pipefail

DEFAULTS_FILE=${DEFAULTS_FILE:-/etc/appsnap/mysql/client.cnf}
LOCK_METHOD=${LOCK_METHOD:-auto}
LOCK_WAIT_SECS=${LOCK_WAIT_SECS:-10}
STATE_DIR=${STATE_DIR:-/run/appsnap/mysql-${APPSNAP_JOB:-manual}}

client=(mysql --batch --skip-column-names --unbuffered)
[[ -r $DEFAULTS_FILE ]] && client=(mysql "--defaults-extra-file=$DEFAULTS_FILE" --batch --skip-column-names --unbuffered)

if ! [[ $LOCK_WAIT_SECS =~ ^[1-9][0-9]{0,4}$ ]]; then
  echo "mysql: LOCK_WAIT_SECS must be a whole number of seconds, got '$LOCK_WAIT_SECS'" >&2
  exit 1
fi

# BACKUP STAGE exists from MariaDB 10.4.1; MySQL has no such statement.
supports_backup_stage() {
  local v major minor
  v=$("${client[@]}" -e 'SELECT VERSION()') || return 1
  [[ $v == *MariaDB* ]] || return 1
  IFS=. read -r major minor _ <<<"$v"
  ((major > 10 || (major == 10 && minor >= 4)))
}

case $LOCK_METHOD in
auto)
  if supports_backup_stage; then method=backup-stage; else method=ftwrl; fi
  ;;
backup-stage | ftwrl) method=$LOCK_METHOD ;;
*)
  echo "mysql: LOCK_METHOD must be auto, backup-stage or ftwrl, got '$LOCK_METHOD'" >&2
  exit 1
  ;;
esac

started=${EPOCHREALTIME/./}
install -d -m 0700 "$STATE_DIR"
fifo=$STATE_DIR/session.in
out=$STATE_DIR/session.out
rm -f "$fifo" "$out" "$STATE_DIR/method"
mkfifo -m 0600 "$fifo"
echo "$method" >"$STATE_DIR/method"

# The session reads SQL from the fifo for as long as a writer holds it open;
# in batch mode it stops at the first error (a lock wait timeout included).
"${client[@]}" <"$fifo" >"$out" 2>&1 &
session=$!
exec 3>"$fifo"
# Keep a writer open after this script exits, so the session (and its lock)
# lives until appsnap ends this process group after the post-script.
# shellcheck disable=SC2217 # fd 3 is what it holds; nothing is read
sleep infinity 3>&3 </dev/null >/dev/null 2>&1 &
echo "$session" >"$STATE_DIR/session.pid"

if [[ $method == backup-stage ]]; then
  lock=("BACKUP STAGE START;" "BACKUP STAGE FLUSH;" "BACKUP STAGE BLOCK_DDL;" "BACKUP STAGE BLOCK_COMMIT;")
else
  lock=("FLUSH TABLES WITH READ LOCK;" "FLUSH ENGINE LOGS;")
fi
printf '%s\n' \
  "SELECT CONCAT('appsnap-connection=', CONNECTION_ID());" \
  "SET SESSION lock_wait_timeout = $LOCK_WAIT_SECS;" \
  "${lock[@]}" \
  "SELECT 'appsnap-locked';" >&3
exec 3>&-

# Ends the statement still waiting for the lock (the server's own timeout
# should have done so already), so it cannot block writers after we give up.
kill_waiting() {
  local id
  id=$(sed -n 's/^appsnap-connection=\([0-9][0-9]*\)$/\1/p' "$out" 2>/dev/null | head -n1)
  if [[ -n $id ]]; then "${client[@]}" -e "KILL $id" >/dev/null 2>&1 || true; fi
}

# Commits are blocked while the lock is held, so the position read now (on a
# second connection) is the one the snapshot holds. It is a record, not a
# condition of consistency: if it cannot be read (no BINLOG MONITOR /
# REPLICATION CLIENT privilege, say), the snapshot is still good.
# Writes it to APPSNAP_TAGS_FILE
# when appsnap passed one.
record_position() {
  local status file='' pos='' gtid=''
  if ! status=$("${client[@]}" -e 'SHOW MASTER STATUS' 2>&1); then
    echo "mysql: the binary log position could not be read (not recorded on the snapshot): $status" >&2
    return 0
  fi
  # MySQL has no such variable: no GTID recorded there.
  gtid=$("${client[@]}" -e 'SELECT @@GLOBAL.gtid_binlog_pos' 2>/dev/null) || gtid=''
  read -r file pos _ <<<"$status" || true
  echo "mysql: binary log position ${file:-none (log_bin off)}${pos:+:$pos}, gtid ${gtid:-none}"
  [[ -n ${APPSNAP_TAGS_FILE:-} ]] || return 0
  {
    if [[ -n $file && $pos =~ ^[0-9]+$ ]]; then echo "appsnap:binlog=$file:$pos"; fi
    # A tag value holds at most 128 characters; a longer GTID list is only logged.
    if [[ -n $gtid && ${#gtid} -le 128 ]]; then echo "appsnap:gtid=$gtid"; fi
  } >>"$APPSNAP_TAGS_FILE"
}

for ((i = 0; i < LOCK_WAIT_SECS * 50 + 250; i++)); do
  if grep -q '^appsnap-locked$' "$out" 2>/dev/null; then
    waited_ms=$(((${EPOCHREALTIME/./} - started) / 1000))
    if [[ $method == backup-stage ]]; then
      echo "mysql: BACKUP STAGE BLOCK_COMMIT held: commits and DDL wait, reads continue (lock wait ${waited_ms} ms, session pid $session)"
    else
      echo "mysql: tables locked read-only, engine logs flushed (lock wait ${waited_ms} ms, session pid $session)"
    fi
    record_position
    exit 0
  fi
  if ! kill -0 "$session" 2>/dev/null; then
    echo "mysql: the lock session ended before the lock ($method) was held:" >&2
    grep -v '^appsnap-' "$out" >&2 || true
    exit 1
  fi
  sleep 0.02
done
kill_waiting
echo "mysql: no lock ($method) within ${LOCK_WAIT_SECS}s (long-running queries or DDL?); the statement was killed" >&2
grep -v '^appsnap-' "$out" >&2 || true
exit 1
