#!/bin/bash
# The VM lane's verify_script (tests/vm/guest.sh installs it as
# /etc/appsnap/verify.sh): run by `appsnap verify --job vm` on the restored
# copies. Checks the LV's copy and that, seen by an unrestricted `lvs`, the
# live VG is as it was before the drill while the clone VG is separate.
# Prints "SCRIPT PASS/FAIL: ..." to /run/drill-script.log; exit 1 if any failed.
exec >/run/drill-script.log 2>&1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
fails=0
say() { if "${@:2}"; then echo "SCRIPT PASS: $1"; else echo "SCRIPT FAIL: $1"; fails=$((fails + 1)); fi; }
echo "APPSNAP_JOB=$APPSNAP_JOB APPSNAP_VERIFY_GROUP=$APPSNAP_VERIFY_GROUP"
echo "APPSNAP_DISK_IDS=$(echo $APPSNAP_DISK_IDS)"
mapfile -t copies <<<"$APPSNAP_MOUNTPOINTS"
mapfile -t sources <<<"$APPSNAP_SOURCE_MOUNTPOINTS"
copy=
for i in "${!copies[@]}"; do
  echo "copy ${copies[i]} of ${sources[i]:-(not mounted live)}"
  [[ ${sources[i]:-} == /mnt/lv ]] && copy=${copies[i]}
done
echo "the LV's copy: ${copy:-none}"
say "the LV copy holds the marker from before the snapshot" grep -qx committed-before-snapshot "$copy/marker"
say "the LV copy holds whole writer records" \
  awk '$0 != "rec " NR - 1 { bad = 1 } END { exit bad || NR == 0 }' "$copy/w.log"
src=$(findmnt -no SOURCE "$copy")
echo "the copy is mounted from $src"
say "the LV copy is mounted from the clone VG, not the live LV" \
  bash -c "[[ '$src' == /dev/mapper/appsnap_verify_* ]]"
echo "+ lvs -o vg_name,lv_name,lv_attr,vg_uuid,lv_uuid,devices"
lvs --noheadings -o vg_name,lv_name,lv_attr,vg_uuid,lv_uuid,devices 2>&1 | tee /tmp/script.lvs
live_now=$(grep -v WARNING /tmp/script.lvs | awk '{$1=$1; print}' | grep '^vmvg ' | sort)
say "lvs in the script: the live VG as before (same UUIDs, active, open)" \
  test "$live_now" = "$(cat /run/appsnap-live-lvs)"
live_vg_uuid=$(awk '{print $4; exit}' /run/appsnap-live-lvs)
clone=$(grep -v WARNING /tmp/script.lvs | awk '$1 ~ /^appsnap_verify_/ {print $1, $4; exit}')
echo "clone VG: ${clone:-none} (live VG UUID $live_vg_uuid)"
say "lvs in the script: the clone VG is separate (own VG UUID)" \
  bash -c "[[ -n '$clone' && '${clone#* }' != '$live_vg_uuid' ]]"
echo "+ pvs -o pv_name,vg_name,pv_uuid,vg_uuid"
pvs --noheadings -o pv_name,vg_name,pv_uuid,vg_uuid 2>&1
exit $((fails > 0))
