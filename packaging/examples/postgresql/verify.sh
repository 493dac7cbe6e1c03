#!/bin/bash
# appsnap verify_script for PostgreSQL: prove a restored copy recovers and checks clean.
#
# What it does
#   appsnap runs this during a restore drill (`appsnap verify`), with the
#   group's restored copies mounted under a private directory. The script
#   finds the copy of the data directory through APPSNAP_MOUNTPOINTS and
#   APPSNAP_SOURCE_MOUNTPOINTS, points pg_wal and the tablespace links (which
#   name the live disks) at their copies, starts a throwaway server on it,
#   waits for crash recovery, runs `pg_amcheck --all` (heap and indexes), runs
#   your query (if QUERY_FILE exists), stops the server, and exits non-zero
#   with a message naming what failed: the drill then fails.
#
#   The throwaway server uses its own postgresql.conf, pg_hba.conf (trust on
#   its socket only) and pg_ident.conf in a private directory under /run,
#   listens on no TCP address, keeps its socket there, and has archiving off:
#   nothing of /etc/postgresql, the live server's socket, port or archive is
#   used. The copy's postmaster.pid (a copy of the live server's lock file,
#   naming the live server's PID) is removed from the copy, or the server
#   would refuse to start.
#
#   appsnap keeps the copies under a root-only (0700) directory that DB_USER
#   cannot traverse, so the server runs (as DB_USER) in a private mount
#   namespace where each copy is also bound under the private directory; the
#   binds disappear with the server.
#
#   The data directory, pg_wal and every tablespace must be on disks of the
#   same job (one snapshot group), or the drill fails naming the missing one.
#
# What to change
#   LIVE_DATADIR      the live cluster's data directory; its copy is used
#   PG_BIN            the server's binaries (default: from the copy's PG_VERSION)
#   EXTRA_ARGS        server options the data needs (`-c name=value ...`)
#   QUERY_FILE        SQL run on the copy (database QUERY_DB) when the file
#                     exists; each output line is printed as `query: ...`,
#                     and an SQL error fails the drill
#   DB_USER, DB_SUPERUSER, START_WAIT_SECS, STOP_WAIT_SECS
#
# Install: root-owned, mode 0700, in a root-owned directory (as the hooks),
# and set the job's `verify_script` to it. Needs setpriv and unshare (util-linux).
set -euo pipefail

LIVE_DATADIR=${LIVE_DATADIR:-/var/lib/postgresql/15/main}
PG_BIN=${PG_BIN:-}
EXTRA_ARGS=${EXTRA_ARGS:-}
QUERY_FILE=${QUERY_FILE:-/etc/appsnap/postgresql/verify.sql}
QUERY_DB=${QUERY_DB:-postgres}
DB_USER=${DB_USER:-postgres}
DB_SUPERUSER=${DB_SUPERUSER:-postgres}
START_WAIT_SECS=${START_WAIT_SECS:-600}
STOP_WAIT_SECS=${STOP_WAIT_SECS:-120}
# Only names the socket file in the private directory; no TCP port is opened.
PORT=5432

me="postgresql verify"
run=""
# The server's logs, then the message: the message ends the output, which
# the drill's report keeps the end of.
fail() {
  if [[ -n $run && -s $run/postgres.log ]]; then
    echo "$me: postgres.log (last 10 lines):" >&2
    tail -n 10 "$run/postgres.log" >&2 || true
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

# Points the symlink $1 (in the copy), if it names an absolute live path, at
# that path's copy as the server sees it.
relink() {
  local link=$1 target new
  target=$(readlink "$link")
  [[ $target == /* ]] || return 0
  new=$(copy_of "$target") ||
    fail "$link points to $target, which is on no disk of group ${APPSNAP_VERIFY_GROUP:-?}: put it on a disk of the same job"
  ln -sfn "$new" "$link"
  chown -h "$DB_USER:" "$link"
}

for tool in setpriv unshare; do
  command -v $tool >/dev/null || fail "$tool (util-linux) is missing"
done
id -u "$DB_USER" >/dev/null 2>&1 || fail "user $DB_USER does not exist"

run=$(mktemp -d /run/appsnap-verify-postgresql.XXXXXX)
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
printf '%s\n' "# appsnap verify: a throwaway server on a restored copy" >"$run/postgresql.conf"
printf '%s\n' "local all all trust" >"$run/pg_hba.conf"
: >"$run/pg_ident.conf"
chown -R "$DB_USER:" "$run"

data=$(copy_of "$LIVE_DATADIR") ||
  fail "$LIVE_DATADIR is on no disk of group ${APPSNAP_VERIFY_GROUP:-?} (copies: ${APPSNAP_MOUNTPOINTS:-none})"
here=$(outside "$data")
[[ -f $here/PG_VERSION ]] || fail "$here (the copy of $LIVE_DATADIR) holds no PostgreSQL data directory"
PG_BIN=${PG_BIN:-/usr/lib/postgresql/$(<"$here/PG_VERSION")/bin}
for tool in postgres psql pg_amcheck; do
  [[ -x $PG_BIN/$tool ]] || fail "$PG_BIN/$tool is missing (PostgreSQL $(<"$here/PG_VERSION") binaries)"
done

for link in "$here/pg_wal" "$here"/pg_tblspc/*; do
  if [[ -L $link ]]; then
    relink "$link"
  fi
done
rm -f "$here/postmaster.pid"

# Command-line settings override postgresql.auto.conf in the copy.
# shellcheck disable=SC2086 # EXTRA_ARGS is a list of options
in_namespace "$PG_BIN/postgres" -D "$data" -k "$run" -p "$PORT" \
  -c "config_file=$run/postgresql.conf" -c "hba_file=$run/pg_hba.conf" \
  -c "ident_file=$run/pg_ident.conf" -c listen_addresses= \
  -c archive_mode=off -c logging_collector=off -c ssl=off \
  $EXTRA_ARGS </dev/null >/dev/null 2>"$run/postgres.log" &
pid=$!
echo "$me: server starting on $here (pid $pid)"

psql=("$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$run" -p "$PORT" -U "$DB_SUPERUSER")
ready=""
for ((i = 0; i < START_WAIT_SECS * 5; i++)); do
  if "${psql[@]}" -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
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
grep -E 'redo (starts|done)|database system is ready' "$run/postgres.log" | sed 's/.*LOG: *//; s/^/recovery: /' || true
version=$("${psql[@]}" -d postgres -c 'SHOW server_version') || fail "SHOW server_version failed"
dbs=$("${psql[@]}" -d postgres -c 'SELECT count(*) FROM pg_database WHERE datallowconn') ||
  fail "listing the databases failed"
echo "$me: server $version answering on the copy, $dbs databases"

checked=$("$PG_BIN/pg_amcheck" -h "$run" -p "$PORT" -U "$DB_SUPERUSER" \
  --all --install-missing --heapallindexed 2>&1) || {
  printf '%s\n' "$checked" >&2
  fail "pg_amcheck --all failed"
}
echo "$me: pg_amcheck --all --heapallindexed: no corruption"

if [[ -f $QUERY_FILE ]]; then
  out=$("${psql[@]}" -d "$QUERY_DB" -f "$QUERY_FILE" 2>&1) || {
    printf '%s\n' "$out" >&2
    fail "the query in $QUERY_FILE failed"
  }
  while IFS= read -r line; do
    echo "query: $line"
  done <<<"$out"
fi

# SIGINT: fast shutdown.
kill -INT "$pid"
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
