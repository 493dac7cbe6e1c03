#!/bin/bash
# appsnap verify_script for MySQL / MariaDB: prove a restored copy starts and checks clean.
#
# What it does
#   appsnap runs this during a restore drill (`appsnap verify`), with the
#   group's restored copies mounted under a private directory. The script
#   finds the copy of the data directory (and of the InnoDB redo log directory
#   when it lives elsewhere) through APPSNAP_MOUNTPOINTS and
#   APPSNAP_SOURCE_MOUNTPOINTS, starts a throwaway server on it, waits for
#   crash recovery, runs `mariadb-check --all-databases`, runs your query (if
#   QUERY_FILE exists), stops the server, and exits non-zero with a message
#   naming what failed: the drill then fails.
#
#   The throwaway server reads no option file (--no-defaults: nothing of
#   /etc/mysql, whose socket, logs and binlog paths belong to the live
#   server), has no networking, keeps its socket, pid file and error log in a
#   private directory under /run that only root and DB_USER can enter, and
#   starts no replication and no event. The live server, its socket, port and
#   files are never used.
#
#   The grant tables are loaded as usual, so connecting proves them usable;
#   root connects through the socket (Debian's default) or with
#   DEFAULTS_FILE's credentials.
#
#   appsnap keeps the copies under a root-only (0700) directory that DB_USER
#   cannot traverse, so the server runs (as DB_USER) in a private mount
#   namespace where each copy is also bound under the private directory; the
#   binds disappear with the server.
#
# What to change
#   LIVE_DATADIR      the live server's datadir; its copy is used
#   LIVE_REDO_DIR     innodb_log_group_home_dir, if not the datadir
#   LIVE_LOG_BIN      the live server's log_bin base name (e.g.
#                     /var/lib/mysql/mariadb-bin); default: the one binary log
#                     index (*.index) in the live datadir's copy, if any. With
#                     the binary log on, a copy taken while commits were
#                     blocked holds transactions prepared but not committed;
#                     the server on the copy resolves them from the copy of
#                     the binary log, as the live server would after a crash
#                     (without it, it refuses to start). The index is
#                     rewritten in the private directory to name the copies,
#                     so nothing of the live server's is opened.
#   EXTRA_ARGS        server options the data needs (innodb_page_size,
#                     lower_case_table_names, ...), space-separated
#   QUERY_FILE        SQL run on the copy when the file exists (e.g.
#                     `SELECT COUNT(*) FROM shop.orders;`); each output line
#                     is printed as `query: ...`, and an SQL error fails the drill
#   DEFAULTS_FILE     [client] credentials for the copy's server, as for the
#                     pre-script (Debian's root connects through the socket
#                     without one); its socket= is overridden
#   DB_USER, MARIADBD, CLIENT, CHECK, START_WAIT_SECS, STOP_WAIT_SECS
#
# Install: root-owned, mode 0700, in a root-owned directory (as the hooks),
# and set the job's `verify_script` to it. Needs setpriv and unshare (util-linux).
set -euo pipefail

LIVE_DATADIR=${LIVE_DATADIR:-/var/lib/mysql}
LIVE_REDO_DIR=${LIVE_REDO_DIR:-}
EXTRA_ARGS=${EXTRA_ARGS:-}
QUERY_FILE=${QUERY_FILE:-/etc/appsnap/mysql/verify.sql}
DEFAULTS_FILE=${DEFAULTS_FILE:-/etc/appsnap/mysql/client.cnf}
DB_USER=${DB_USER:-mysql}
MARIADBD=${MARIADBD:-/usr/sbin/mariadbd}
CLIENT=${CLIENT:-/usr/bin/mariadb}
CHECK=${CHECK:-/usr/bin/mariadb-check}
START_WAIT_SECS=${START_WAIT_SECS:-600}
STOP_WAIT_SECS=${STOP_WAIT_SECS:-120}

me="mysql verify"
run=""
# The server's logs, then the message: the message ends the output, which
# the drill's report keeps the end of.
fail() {
  local f
  if [[ -n $run ]]; then
    for f in "$run/start.err" "$run/mysqld.err"; do
      [[ -s $f ]] || continue
      echo "$me: $(basename "$f") (last 10 lines):" >&2
      tail -n 10 "$f" >&2 || true
    done
  fi
  echo "$me: $*" >&2
  exit 1
}

mapfile -t copies <<<"${APPSNAP_MOUNTPOINTS:-}"
mapfile -t lives <<<"${APPSNAP_SOURCE_MOUNTPOINTS:-}"

# The copy of live path $1 as the server sees it: the copy whose live mount
# point is the longest prefix of $1 (copy N), plus the rest of $1, under
# $run/copy-N, where the server's private mount namespace binds copy N.
copy_of() {
  local want=$1 best_live="" best="" i live rest
  for i in "${!copies[@]}"; do
    live=${lives[i]:-}
    [[ -n $live && -n ${copies[i]} ]] || continue
    if [[ $want == "$live" || $want == "${live%/}/"* ]] && ((${#live} > ${#best_live})); then
      best_live=$live
      best=$i
    fi
  done
  [[ -n $best ]] || return 1
  rest=${want#"$best_live"}
  rest=${rest#/}
  printf '%s\n' "$run/copy-$best${rest:+/$rest}"
}

# Path $1 from copy_of as this script sees it (outside the namespace).
outside() {
  local p=$1 i
  for i in "${!copies[@]}"; do
    if [[ $p == "$run/copy-$i" || $p == "$run/copy-$i/"* ]]; then
      printf '%s\n' "${copies[i]%/}${p#"$run/copy-$i"}"
      return
    fi
  done
  printf '%s\n' "$p"
}

# Runs "$@" as DB_USER in a private mount namespace where each copy is
# bound at $run/copy-N. The binds vanish with the namespace when the
# server exits or is killed: nothing to unmount, nothing left on the host.
# Run it in the background (`in_namespace ... &`): it execs, so $! is the
# server itself.
in_namespace() {
  local -a binds=()
  local i
  for i in "${!copies[@]}"; do
    [[ -n ${copies[i]} ]] || continue
    mkdir -p "$run/copy-$i"
    binds+=("${copies[i]}" "$run/copy-$i")
  done
  # shellcheck disable=SC2016 # expanded by the inner shell
  exec unshare --mount --propagation private -- /bin/bash -c '
    set -e
    n=$1
    shift
    for ((i = 0; i < n; i++)); do
      mount --bind "$1" "$2"
      shift 2
    done
    exec "$@"' bash "$((${#binds[@]} / 2))" "${binds[@]}" \
    setpriv --reuid="$DB_USER" --regid="$DB_USER" --init-groups -- "$@"
}

# Whether process $1 runs (a zombie does not).
alive() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  [[ ${st%% *} != Z ]]
}

for tool in "$MARIADBD" "$CLIENT" "$CHECK"; do
  [[ -x $tool ]] || fail "$tool is missing"
done
for tool in setpriv unshare; do
  command -v $tool >/dev/null || fail "$tool (util-linux) is missing"
done
id -u "$DB_USER" >/dev/null 2>&1 || fail "user $DB_USER does not exist"

run=$(mktemp -d /run/appsnap-verify-mysql.XXXXXX)
pid=""
cleanup() {
  local d
  if [[ -n $pid ]] && alive "$pid"; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  # The binds lived in the server's namespace: here these are empty
  # directories. Never recurse into one that is not.
  for d in "$run"/copy-*; do
    [[ -e $d ]] || continue
    rmdir "$d" || {
      echo "$me: $d is not empty; $run left in place" >&2
      return
    }
  done
  rm -rf "$run"
}
trap cleanup EXIT
# The drill's timeout ends the script with SIGTERM: clean up then too.
trap 'exit 143' TERM
trap 'exit 130' INT
chown "$DB_USER:" "$run"
sock=$run/mysqld.sock

data=$(copy_of "$LIVE_DATADIR") ||
  fail "$LIVE_DATADIR is on no disk of group ${APPSNAP_VERIFY_GROUP:-?} (copies: ${APPSNAP_MOUNTPOINTS:-none})"
[[ -d $(outside "$data")/mysql ]] ||
  fail "$(outside "$data") (the copy of $LIVE_DATADIR) holds no MariaDB data directory"
redo_arg=()
binlog_arg=()
LIVE_LOG_BIN=${LIVE_LOG_BIN:-}
if [[ -z $LIVE_LOG_BIN ]]; then
  shopt -s nullglob
  indexes=("$(outside "$data")"/*.index)
  shopt -u nullglob
  if ((${#indexes[@]} == 1)); then
    LIVE_LOG_BIN=${LIVE_DATADIR%/}/$(basename "${indexes[0]}" .index)
  fi
fi
if [[ -n $LIVE_LOG_BIN ]]; then
  base=$(copy_of "$LIVE_LOG_BIN") ||
    fail "the binary log $LIVE_LOG_BIN is on no disk of group ${APPSNAP_VERIFY_GROUP:-?}"
  [[ -f $(outside "$base").index ]] || fail "no binary log index $(outside "$base").index in the copy"
  # Each entry as the copy's file: relative ones are in the datadir, absolute
  # ones (the live server's paths) are mapped to their copies.
  : >"$run/binlog.index"
  while IFS= read -r entry || [[ -n $entry ]]; do
    [[ -n $entry ]] || continue
    if [[ $entry == /* ]]; then
      mapped=$(copy_of "$entry") || fail "binary log $entry is on no disk of group ${APPSNAP_VERIFY_GROUP:-?}"
    else
      mapped=$data/${entry#./}
    fi
    printf '%s\n' "$mapped" >>"$run/binlog.index"
  done <"$(outside "$base").index"
  chown "$DB_USER:" "$run/binlog.index"
  binlog_arg=("--log-bin=$base" "--log-bin-index=$run/binlog.index" --server-id=1)
fi
if [[ -n $LIVE_REDO_DIR ]]; then
  redo=$(copy_of "$LIVE_REDO_DIR") ||
    fail "the redo log directory $LIVE_REDO_DIR is on no disk of group ${APPSNAP_VERIFY_GROUP:-?}"
  redo_arg=("--innodb-log-group-home-dir=$redo")
fi

# shellcheck disable=SC2086 # EXTRA_ARGS is a list of options
in_namespace "$MARIADBD" --no-defaults "--datadir=$data" "${redo_arg[@]}" "${binlog_arg[@]}" \
  "--socket=$sock" "--pid-file=$run/mysqld.pid" "--log-error=$run/mysqld.err" \
  "--tmpdir=$run" --skip-networking --skip-slave-start --event-scheduler=DISABLED \
  $EXTRA_ARGS </dev/null >/dev/null 2>"$run/start.err" &
pid=$!
echo "$me: server starting on $(outside "$data") (pid $pid)"

# Credentials only: --socket on the command line wins over the file's.
creds=(--no-defaults)
[[ -r $DEFAULTS_FILE ]] && creds=("--defaults-file=$DEFAULTS_FILE")
client=("$CLIENT" "${creds[@]}" "--socket=$sock" --batch --skip-column-names)
ready=""
for ((i = 0; i < START_WAIT_SECS * 5; i++)); do
  if "${client[@]}" -e 'SELECT 1' >/dev/null 2>&1; then
    ready=1
    break
  fi
  alive "$pid" || break
  sleep 0.2
done
if [[ -z $ready ]]; then
  if alive "$pid"; then
    fail "the server on the copy did not answer within ${START_WAIT_SECS}s"
  fi
  fail "the server on the copy exited before answering (its log above)"
fi
version=$("${client[@]}" -e 'SELECT VERSION()') || fail "SELECT VERSION() failed"
echo "$me: server $version answering on the copy"

checked=$("$CHECK" "${creds[@]}" "--socket=$sock" --all-databases 2>&1) || {
  printf '%s\n' "$checked" >&2
  fail "mariadb-check --all-databases failed"
}
bad='^[[:space:]]*error[[:space:]]*:|corrupt'
if grep -qiE "$bad" <<<"$checked"; then
  grep -vE '[[:space:]]OK$' <<<"$checked" >&2
  fail "mariadb-check --all-databases reports errors"
fi
echo "$me: mariadb-check --all-databases: $(grep -c 'OK$' <<<"$checked") tables OK"

if [[ -f $QUERY_FILE ]]; then
  out=$("${client[@]}" <"$QUERY_FILE" 2>&1) || {
    printf '%s\n' "$out" >&2
    fail "the query in $QUERY_FILE failed"
  }
  while IFS= read -r line; do
    echo "query: $line"
  done <<<"$out"
fi

kill -TERM "$pid"
for ((i = 0; i < STOP_WAIT_SECS * 5; i++)); do
  alive "$pid" || break
  sleep 0.2
done
if alive "$pid"; then
  fail "the server on the copy did not stop within ${STOP_WAIT_SECS}s (killed)"
fi
code=0
wait "$pid" || code=$?
pid=""
[[ $code == 0 ]] || fail "the server on the copy exited with status $code at shutdown"
echo "$me: passed, server stopped"
