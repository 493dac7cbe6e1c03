#!/usr/bin/env bash
# Second half of the system lane (tests/system/run starts it under
# `unshare -m --propagation private`, with $work $machine $rootfs $repo set):
# boots the cached rootfs through an overlay with systemd-nspawn -b and walks
# the operator's path with the .deb, then with the .rpm. Every command run in
# the container is echoed with its output, so the log is the transcript.
set -euo pipefail
: "${work:?}" "${machine:?}" "${rootfs:?}" "${repo:?}" "${sim:?}"

declare -a timings=()
step_name= step_start=$SECONDS
step() {
  [[ -n $step_name ]] && timings+=("$(printf '%6ds  %s' "$((SECONDS - step_start))" "$step_name")")
  step_name=$1 step_start=$SECONDS
  printf '\n--- container: %s\n' "$1"
}
fail() { echo "container: FAIL: $*" >&2; exit 1; }

mkdir -p "$work/upper" "$work/ovl" "$work/merged"
mount -t overlay overlay -o "lowerdir=$rootfs,upperdir=$work/upper,workdir=$work/ovl" "$work/merged"
echo "$machine" >"$work/merged/etc/hostname"
# Not /tmp: the container mounts a tmpfs there.
cp "$work/appsnap.deb" "$work/appsnap.rpm" "$work/merged/root/"

# A file system of our own for the freeze check, bound into the container
# at /srv/data (a loop mount in this private namespace; autoclear detaches
# the loop device when the namespace goes).
truncate -s 64M "$work/data.img"
mkfs.ext4 -q -F "$work/data.img"
mkdir -p "$work/data"
mount -o loop "$work/data.img" "$work/data"
loopdev=$(findmnt -n -o SOURCE "$work/data")

# The emulator on the host's loopback (the container shares the host's
# network): one data disk backed by data.img, its serial linked in a by-id
# dir bound into the container, like udev's /dev/disk/by-id on ECS.
disk=d-bp1systemlane0000001
cat >"$work/sim.toml" <<EOF
listen = "127.0.0.1"
region_id = "cn-hangzhou"
zone_id = "cn-hangzhou-i"
instance_id = "i-bp1appsnapsystem0001"
ram_role = "AppSnapshotRoleName"
http_tokens = "required"
snapshot_dir = "$work/snapshots"
time_to_accomplish_secs = 2
[[disk]]
id = "$disk"
type = "data"
size_gib = 1
backing = "$work/data.img"
probe_mounts = ["$work/data"]
EOF
"$sim" --config "$work/sim.toml" --ready-file "$work/sim.ready" >"$work/sim.out" 2>"$work/sim.err" &
sim_pid=$!
for _ in $(seq 100); do [[ -s $work/sim.ready ]] && break; sleep 0.1; done
[[ -s $work/sim.ready ]] || { cat "$work/sim.err" >&2; echo "ecs-sim did not start" >&2; exit 1; }
imds=$(sed -n 's/.*imds=\([^ ]*\).*/\1/p' "$work/sim.ready")
ecs=$(sed -n 's/.*ecs=\([^ ]*\).*/\1/p' "$work/sim.ready")
mkdir -p "$work/by-id"
ln -s "$loopdev" "$work/by-id/virtio-${disk#d-}"

nspawn= cp1=
cleanup() {
  local rc=$?
  # Thaw before anything else: an unmounted frozen superblock stays frozen.
  fsfreeze -u "$work/data" 2>/dev/null || true
  if [[ -n $cp1 ]] && kill -0 "$cp1" 2>/dev/null; then
    timeout 10 nsenter -t "$cp1" -a systemctl poweroff >/dev/null 2>&1 || true
    for _ in $(seq 50); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.2; done
    # Killing a PID namespace's init kills everything in the container.
    kill -0 "$cp1" 2>/dev/null && kill -KILL "$cp1" 2>/dev/null
  fi
  [[ -n $nspawn ]] && kill -0 "$nspawn" 2>/dev/null && kill -KILL "$nspawn" 2>/dev/null
  [[ -n ${sim_pid:-} ]] && kill "$sim_pid" 2>/dev/null
  wait 2>/dev/null || true
  if ((rc != 0)); then
    echo "--- nspawn console (last 40 lines):"
    tail -n 40 "$work/nspawn.log" 2>/dev/null || true
  fi
  umount -l "$work/merged" 2>/dev/null || true
  umount "$work/data" 2>/dev/null || true
  printf '\ncontainer timings:\n'
  step "(end)"
  printf '  %s\n' "${timings[@]}"
  exit "$rc"
}
trap cleanup EXIT

step "boot"
systemd-nspawn -D "$work/merged" -M "$machine" -b --register=no --keep-unit \
  --console=read-only --bind="$work/data:/srv/data" \
  --bind-ro="$work/by-id:/srv/by-id" --bind="$loopdev" >"$work/nspawn.log" 2>&1 &
nspawn=$!
for _ in $(seq 100); do
  cp1=$(pgrep -P "$nspawn" -x systemd || true)
  [[ -n $cp1 ]] && break
  sleep 0.1
done
[[ -n $cp1 ]] || fail "container systemd did not start"
# systemctl fails ("Failed to connect to bus") until PID 1 has its socket
# up, and answers "offline" while PID 1 is not yet the container's systemd
# (seen once: the process found above had not finished becoming it); both
# are asked again.
state=
for _ in $(seq 100); do
  state=$(timeout 60 nsenter -t "$cp1" -a systemctl is-system-running --wait 2>/dev/null || true)
  [[ -n $state && $state != offline ]] && break
  sleep 0.1
done
echo "is-system-running: $state"
[[ $state == running || $state == degraded ]] || fail "container state: $state"

# Runs a command in the container, echoing it: the log is the transcript.
c() {
  printf '[%s]# %s\n' "$machine" "$*"
  timeout 120 nsenter -t "$cp1" -a "$@"
}
# The same, quietly, for checks.
q() { timeout 120 nsenter -t "$cp1" -a "$@"; }
leftovers() { # any file or dir named *appsnap* outside the package files we copied in
  q sh -c 'find / /run -xdev \( -path /proc -o -path /sys -o -path /var/log/journal -o -path /root \) -prune -o -name "*appsnap*" -print 2>/dev/null | sort -u'
}

step "deb: install"
before=$(leftovers)
[[ -z $before ]] || fail "fresh rootfs already has: $before"
c dpkg -i /root/appsnap.deb
[[ $(q systemctl is-enabled appsnap) == enabled ]] || fail "unit not enabled on install"
[[ $(q systemctl is-active appsnap || true) == inactive ]] || fail "unit started on install (it should only be enabled)"
for d in /run/appsnap /var/lib/appsnap; do
  [[ $(q stat -c '%a %U' "$d") == "700 root" ]] || fail "$d is not 0700 root (tmpfiles.d)"
done
q test -d /etc/appsnap.d || fail "no /etc/appsnap.d"
[[ $(q stat -c %a /usr/share/doc/appsnap/examples/postgresql/prescript.sh) == 700 ]] || fail "examples not 0700"
q test -s /usr/share/man/man1/appsnap.1.gz || fail "no man page"
q test -s /usr/share/man/man5/appsnap.toml.5.gz || fail "no appsnap.toml(5)"
q test -s /usr/share/bash-completion/completions/appsnap || fail "no bash completion"
c appsnap --version
c appsnap check --offline
# test-infra §4: verify the installed unit too (ExecStart now exists).
out=$(q systemd-analyze verify --man=no /usr/lib/systemd/system/appsnap.service 2>&1) || fail "verify: $out"
[[ -z $out ]] || fail "systemd-analyze verify (installed) printed: $out"

step "deb: the unit runs in its own mount namespace"
# ProtectSystem= and friends give every command of the unit a private mount
# namespace, where every mount ID differs from PID 1's. The next step
# freezes from PID 1's namespace and needs ExecStopPost, in the unit's, to
# recognise the file system by its superblock. Probe with an ExecStartPre,
# which runs under exactly the unit's sandbox.
q mkdir -p /run/systemd/system/appsnap.service.d
q sh -c 'printf "[Service]\nExecStartPre=/bin/sh -c \"readlink /proc/self/ns/mnt >/run/appsnap-ns-probe\"\n" >/run/systemd/system/appsnap.service.d/ns-probe.conf'
q systemctl daemon-reload
q systemctl start appsnap >/dev/null 2>&1 || true
unit_ns=$(q cat /run/appsnap-ns-probe)
init_ns=$(q readlink /proc/1/ns/mnt)
echo "unit mount ns: $unit_ns, PID 1's: $init_ns"
[[ $unit_ns != "$init_ns" ]] || fail "the unit shares PID 1's mount namespace: its sandbox is off"
q systemctl stop appsnap >/dev/null 2>&1 || true
q systemctl reset-failed appsnap >/dev/null 2>&1 || true
q rm -rf /run/systemd/system/appsnap.service.d /run/appsnap-ns-probe
q systemctl daemon-reload

step "deb: ExecStopPost thaws what a killed freeze guard left frozen"
# The worst case the unit exists for: the guard is SIGKILLed while /srv/data
# is frozen, so its deadline thread dies with it. The record it wrote first
# must be enough for the unit's ExecStopPost to thaw, inside the unit's
# sandbox: another mount namespace than the guard's, so by superblock. The
# request names /srv/data by the identity the guard checks.
read -r mnt_id majmin < <(q awk '$5 == "/srv/data" { print $1, $3 }' /proc/1/mountinfo)
req=$(printf '{"version":1,"run_dir":"/run/appsnap","deadline_ms":300000,"targets":[{"mount_point":"/srv/data","mount_id":%s,"dev_major":%s,"dev_minor":%s,"fs_type":"ext4"}]}' \
  "$mnt_id" "${majmin%%:*}" "${majmin##*:}")
q sh -c "printf '%s\nfreeze\n' '$req' >/run/guard.req"
# stdin stays open (EOF would mean "thaw now"): the sleep holds the fifo.
q sh -c 'mkfifo /run/guard.in
  appsnap freeze-guard </run/guard.in >/run/guard.out 2>&1 & echo $! >/run/guard.pid
  sleep 300 >/run/guard.in & echo $! >/run/holder.pid
  cat /run/guard.req >/run/guard.in'
for _ in $(seq 100); do q grep -q '"event":"frozen"' /run/guard.out 2>/dev/null && break; sleep 0.1; done
q grep -q '"event":"frozen"' /run/guard.out || { q cat /run/guard.out; fail "the guard did not freeze /srv/data"; }
guard=$(q cat /run/guard.pid)
q kill -KILL "$guard"
q kill "$(q cat /run/holder.pid)"
# Probe without writing (a write would hang): freezing an already frozen
# file system fails with EBUSY; if it succeeds, it was not frozen.
if fsfreeze -f "$work/data" 2>/dev/null; then
  fsfreeze -u "$work/data"
  fail "/srv/data was not frozen after the guard was killed"
fi
q test -e /run/appsnap/frozen.json || fail "no frozen-set record"
echo "guard $guard killed with /srv/data frozen; record: $(q cat /run/appsnap/frozen.json)"
# A policy that does not load makes the daemon exit before its own
# start-up recovery, so only ExecStopPost can thaw: the operator's typo
# must not keep a file system frozen.
q cp /etc/appsnap.toml /root/appsnap.toml.orig
q sh -c 'echo "bogus_key = 1" >>/etc/appsnap.toml'
c systemctl start appsnap && fail "started with a broken policy"
c systemctl stop appsnap
q cp /root/appsnap.toml.orig /etc/appsnap.toml
fsfreeze -f "$work/data" 2>/dev/null || fail "/srv/data still frozen after systemctl start/stop"
fsfreeze -u "$work/data"
q test ! -e /run/appsnap/frozen.json || fail "frozen-set record left after ExecStopPost"
q journalctl -u appsnap -b --no-pager -o cat | grep -q '^  thawed /srv/data (ext4)$' ||
  fail "no 'thawed /srv/data' from ExecStopPost in the journal"
q systemctl reset-failed appsnap >/dev/null 2>&1 || true

step "deb: a scheduled job runs under systemd"
# The policy an operator would write, with the cloud endpoints pointed at
# the emulator and the by-id dir at the one bound in.
q sh -c "cat >/etc/appsnap.toml" <<EOF
[cloud]
endpoint = "$ecs"
metadata_endpoint = "$imds"
[host]
by_id_dir = "/srv/by-id"
[[job]]
name = "systest"
schedule = "*/10 * * * * *"
timezone = "UTC"
disks = ["$disk"]
description = "system lane"
EOF
c appsnap check --offline
q sh -c 'echo committed-before-snapshot >/srv/data/marker; sync'
c systemctl start appsnap
c systemctl status appsnap --no-pager --lines=0
main_pid=$(q systemctl show -P MainPID appsnap)
[[ $(q readlink "/proc/$main_pid/ns/mnt") != "$init_ns" ]] || fail "the daemon shares PID 1's mount namespace: its sandbox is off"
ok=
for _ in $(seq 60); do
  if q appsnap status --json 2>/dev/null | grep -q '"ssg-'; then ok=1; break; fi
  sleep 1
done
c appsnap status
[[ -n $ok ]] || { c journalctl -u appsnap -b --no-pager -o cat; fail "no scheduled run recorded a snapshot group within 60 s"; }
c sh -c 'journalctl -u appsnap -b -o verbose APPSNAP_JOB=systest | grep -E "^ +(MESSAGE|APPSNAP_[A-Z_]+)=" | head -n 40'
# journalctl APPSNAP_JOB=... found them; each also names its run.
q journalctl -u appsnap -b -o export APPSNAP_JOB=systest | grep -q '^APPSNAP_RUN_ID=' ||
  fail "journal entries lack APPSNAP_RUN_ID"
# ...and the step it came from: the thaw line is filed under APPSNAP_PHASE=thaw.
q journalctl -u appsnap -b -o export APPSNAP_JOB=systest APPSNAP_PHASE=thaw | grep -q '^MESSAGE=thawed ' ||
  fail "the thaw line lacks APPSNAP_PHASE=thaw"
q journalctl -u appsnap -b -o cat APPSNAP_JOB=systest | grep -q '^run finished: 0 ' ||
  fail "no 'run finished: 0' for the job in the journal"
ls "$work"/snapshots/ssg-*/"$disk".img >/dev/null || fail "the emulator holds no snapshot image"

step "deb: reload, stop"
q sed -i 's/^description = "system lane"$/description = "system lane, reloaded"/' /etc/appsnap.toml
c systemctl reload appsnap
sleep 1
[[ $(q systemctl is-active appsnap) == active ]] || fail "not active after reload"
[[ $(q systemctl show -P MainPID appsnap) == "$main_pid" ]] || fail "reload restarted the daemon"
q journalctl -u appsnap -b --no-pager -o cat | grep -q 'policy reloaded' || fail "no 'policy reloaded' in the journal"
c systemctl stop appsnap
c journalctl -u appsnap -b --no-pager -o cat --lines=15
# Nothing frozen: probe without writing (EBUSY would mean frozen).
fsfreeze -f "$work/data" 2>/dev/null || fail "/srv/data frozen after systemctl stop"
fsfreeze -u "$work/data"
q test ! -e /run/appsnap/frozen.json || fail "a frozen-set record is left"
q journalctl -u appsnap -b --no-pager -o cat | grep -q '^nothing to thaw: no frozen-set record in /run/appsnap$' ||
  fail "ExecStopPost (appsnap thaw --all) left no line in the journal"

step "deb: upgrade keeps the operator's policy"
q sh -c 'echo "# edited by the operator" >>/etc/appsnap.toml'
c dpkg -i /root/appsnap.deb
q grep -q '^# edited by the operator$' /etc/appsnap.toml || fail "upgrade overwrote /etc/appsnap.toml"
[[ $(q systemctl is-enabled appsnap) == enabled ]] || fail "upgrade disabled the unit"

step "deb: purge"
c apt-get purge -y -q appsnap
after=$(leftovers)
[[ -z $after ]] || fail "left after purge: $after"
q systemctl cat appsnap >/dev/null 2>&1 && fail "unit still known after purge"

step "rpm: install"
c rpm -i --nodeps /root/appsnap.rpm
[[ $(q systemctl is-enabled appsnap) == enabled ]] || fail "unit not enabled by %post"
for d in /run/appsnap /var/lib/appsnap; do
  [[ $(q stat -c '%a %U' "$d") == "700 root" ]] || fail "$d is not 0700 root (tmpfiles.d)"
done
q test -d /etc/appsnap.d || fail "no /etc/appsnap.d"
c appsnap check --offline

step "rpm: start, stop"
c systemctl start appsnap
[[ $(q systemctl is-active appsnap) == active ]] || fail "rpm: unit not active"
c systemctl stop appsnap

step "rpm: upgrade keeps the operator's policy"
q sh -c 'echo "# edited by the operator" >>/etc/appsnap.toml'
c rpm -U --nodeps --replacepkgs /root/appsnap.rpm
q grep -q '^# edited by the operator$' /etc/appsnap.toml || fail "rpm -U overwrote /etc/appsnap.toml"

step "rpm: erase"
c rpm -e appsnap
after=$(leftovers | grep -v '^/etc/appsnap.toml.rpmsave$' || true)
[[ -z $after ]] || fail "left after rpm -e: $after"
# rpm keeps an edited %config file as .rpmsave, which is what operators expect.
q test -e /etc/appsnap.toml.rpmsave || fail "rpm -e dropped the edited policy instead of keeping .rpmsave"

step "poweroff"
q systemctl poweroff || true
for _ in $(seq 100); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.1; done
kill -0 "$nspawn" 2>/dev/null && fail "container did not power off within 10 s"
cp1=
echo "container: OK"
