"""The contract lane's restore-drill part: the official SDK drives the disk
lifecycle a drill uses (CreateDisk from a snapshot, DescribeDisks by id and
by tag, AttachDisk, DetachDisk, DeleteDisk) and the documented errors a
drill must read, against the emulator; every answer goes through
`drive.check_answer` (model keys and types, from_map/to_map both ways).

AttachDisk makes a loop device (root): the by-id link must name the serial
DescribeDisks reports, and every device is released before this returns,
even on failure (`release`). Without root the lane passes `--no-device` and
the `attach_no_device` fault gives the same answers without a device.

Also writes, for tests/contract_decode.rs:
- `DescribeDisks.created.json`: the SDK's own `to_map()` of a DescribeDisks
  answer listing the two drill disks (one In_use, one Available);
- `DiskErrors.json`: the error codes the SDK raised, by case.
"""

import json
import os
import time
import urllib.request
import xml.etree.ElementTree as ET

from alibabacloud_ecs20140526 import models as M

# What every drill disk carries (tests/contract_decode.rs checks the same).
DRILL_TAGS = [("appsnap:verify", "contract-run"), ("owner", "ops")]
NO_SUCH_SNAPSHOT = "s-contractnosuch0000"
# The keys appsnap's `Disk` reads (src/cloud/ecs/types.rs). It decodes with
# serde defaults, so a key the emulator left out would read as ""/0/false
# (DeleteWithInstance false, no SourceSnapshotId) instead of failing: every
# listed drill disk must carry them all.
DISK_KEYS = ["DiskId", "Category", "Type", "Size", "Status", "InstanceId", "SerialNumber",
             "MultiAttach", "ZoneId", "DiskName", "Description", "CreationTime",
             "SourceSnapshotId", "PerformanceLevel", "DeleteWithInstance", "Tags"]


def check_disks(h, log, r, mode):
    """One DescribeDisks answer of drill disks: the model check, plus every
    key appsnap reads present in each disk."""
    answer = log.by_request_id(r.body.request_id)["answer"]
    h.check_answer("DescribeDisks", answer, mode)
    items = answer.get("Disks", {}).get("Disk", [])
    problems = [f"{d.get('DiskId')}: no {k}" for d in items for k in DISK_KEYS if k not in d]
    h.row("DescribeDisks", "keys appsnap's Disk reads", mode, len(items) * len(DISK_KEYS), problems)


def sim_state(a):
    with urllib.request.urlopen(a.ecs + "/_sim/state", timeout=10) as r:
        return json.loads(r.read())


def created(a, disk_id):
    for d in sim_state(a)["created_disks"]:
        if d["id"] == disk_id:
            return d
    raise SystemExit(f"{disk_id} is not among the emulator's created disks")


def describe(c, a, ids):
    return c.describe_disks(M.DescribeDisksRequest(
        region_id=a.region, disk_ids=json.dumps(ids), max_results=10))


def wait_status(c, a, disk_id, want, timeout=30.0):
    end = time.monotonic() + timeout
    status = None
    while time.monotonic() < end:
        ds = describe(c, a, [disk_id]).body.disks.disk
        status = ds[0].status if ds else "gone"
        if status == want:
            return
        time.sleep(0.05)
    raise SystemExit(f"{disk_id} is {status}, never {want} within {timeout:.0f} s")


def error_of(call):
    """Run `call`, which must fail: (SDK exception, its code, its request id)."""
    try:
        call()
    except Exception as e:  # the SDK's ClientException / ServerException
        rid = getattr(e, "request_id", None) or (getattr(e, "data", None) or {}).get("RequestId")
        return e, getattr(e, "code", None), rid
    raise SystemExit("a call that must fail succeeded")


def sdk_error(h, log, action, want, call):
    """One documented error: the SDK raises it with the emulator's code and
    the JSON body holds only an ECS error's fields. Returns the code."""
    e, code, rid = error_of(call)
    problems = [] if code == want else [f"SDK saw code {code!r}, expected {want!r}: {e}"]
    h.row(action, type(e).__name__, "sdk-error", 1, problems)
    if rid:
        h.check_error_body(action, log.by_request_id(rid)["answer"], "error-json")
    else:
        h.row(action, "error body", "error-json", 0, ["the SDK exception has no RequestId"])
    return code


def release(c, a, ids):
    """Detach (if attached) and delete every disk in `ids`; never raises.
    Returns what could not be released, for the caller to report."""
    left = []
    for disk_id in ids:
        try:
            ds = describe(c, a, [disk_id]).body.disks.disk
            if not ds:
                continue
            if ds[0].status in ("Creating", "Attaching", "Detaching"):
                wait_status(c, a, disk_id, "In_use" if ds[0].status == "Attaching" else "Available")
                ds = describe(c, a, [disk_id]).body.disks.disk
            if ds[0].status == "In_use":
                clear_faults(a)
                c.detach_disk(M.DetachDiskRequest(instance_id=a.instance, disk_id=disk_id))
                wait_status(c, a, disk_id, "Available")
            c.delete_disk(M.DeleteDiskRequest(disk_id=disk_id))
        except BaseException as e:  # keep releasing the others
            left.append(f"{disk_id}: {type(e).__name__}: {e}")
    return left


def clear_faults(a):
    """No fault plan in the way of a release."""
    req = urllib.request.Request(a.ecs + "/_sim/faults", method="DELETE")
    urllib.request.urlopen(req, timeout=10).read()


def run(h, a, c, log, snaps):
    """`h` is the driver module (row, check_answer, check_error_body,
    check_xml, sim_call, post_faults); `snaps` the two snapshot ids of one
    accomplished group."""
    ids = []
    try:
        lifecycle(h, a, c, log, snaps, ids)
    finally:
        # Also any disk a failed check created behind our back.
        extra = [d["id"] for d in sim_state(a)["created_disks"]
                 if not d["deleted"] and d["id"] not in ids]
        left = release(c, a, ids + extra)
        state = sim_state(a)["created_disks"]
        problems = list(left)
        for d in state:
            if not d["deleted"] or d["image_exists"] or d["loop_device"] or d["link"]:
                problems.append(f"{d['id']} left behind: {d}")
            if d["link"] and os.path.lexists(d["link"]):
                problems.append(f"{d['link']}: link still exists")
        h.row("DeleteDisk", "/_sim/state", "released", len(state), problems)


def lifecycle(h, a, c, log, snaps, ids):
    tags = [M.CreateDiskRequestTag(key=k, value=v) for k, v in DRILL_TAGS]

    def create(snapshot, category="cloud_essd", level="PL0", token=None):
        return c.create_disk(M.CreateDiskRequest(
            region_id=a.region, zone_id=a.zone, snapshot_id=snapshot,
            disk_category=category, performance_level=level,
            disk_name="appsnap-verify-contract", description="contract lane drill disk",
            tag=tags, client_token=token))

    # CreateDisk from each snapshot of the group (lists of two below); the
    # ClientToken makes a retry answer the same disk.
    for n, s in enumerate(snaps):
        r = create(s, token=f"contract-create-{n}")
        ids.append(r.body.disk_id)
        h.check_answer("CreateDisk", log.by_request_id(r.body.request_id)["answer"], "json",
                       complete=True)
    again = create(snaps[0], token="contract-create-0").body.disk_id
    h.row("CreateDisk", "CreateDiskResponseBody", "idempotent", 1,
          [] if again == ids[0] else [f"same ClientToken, another disk {again} (first {ids[0]})"])
    for disk_id in ids:
        wait_status(c, a, disk_id, "Available")

    # DescribeDisks by id (V3 and V1) and by tag: both drill disks, their
    # source snapshots and tags.
    for v1 in (False, True):
        r = describe(h.sdk_client(a, v1), a, ids)
        ds = {d.disk_id: d for d in r.body.disks.disk}
        problems = [] if set(ds) == set(ids) else [f"listed {sorted(ds)}, expected {sorted(ids)}"]
        for disk_id, s in zip(ids, snaps):
            d = ds.get(disk_id)
            if d and (d.source_snapshot_id != s or d.status != "Available"
                      or d.category != "cloud_essd" or d.performance_level != "PL0"
                      or sorted((t.tag_key, t.tag_value) for t in d.tags.tag) != sorted(DRILL_TAGS)):
                problems.append(f"{disk_id}: {d.to_map()}")
        h.row("DescribeDisks", "by DiskIds (SDK view)", "v1" if v1 else "v3", len(ds), problems)
        check_disks(h, log, r, "json-v1" if v1 else "json")
    by_tag = M.DescribeDisksRequest(region_id=a.region, max_results=10, tag=[
        M.DescribeDisksRequestTag(key=DRILL_TAGS[0][0], value=DRILL_TAGS[0][1])])
    r = c.describe_disks(by_tag)
    got = sorted(d.disk_id for d in r.body.disks.disk)
    h.row("DescribeDisks", "by Tag.1 (SDK view)", "json", len(got),
          [] if got == sorted(ids) else [f"listed {got}, expected {sorted(ids)}"])
    check_disks(h, log, r, "json")
    h.check_xml(a, "DescribeDisks", [("RegionId", a.region), ("Tag.1.Key", DRILL_TAGS[0][0]),
                                     ("DiskIds", json.dumps(ids))])

    # The documented refusals a drill reads (CreateDisk and DeleteDisk error
    # tables): the codes go to DiskErrors.json for appsnap's classifier.
    codes = {}
    codes["snapshot_not_found"] = sdk_error(
        h, log, "CreateDisk", "InvalidSnapshotId.NotFound", lambda: create(NO_SUCH_SNAPSHOT))
    codes["category_basic"] = sdk_error(
        h, log, "CreateDisk", "InvalidDataDiskCategory.NotSupported",
        lambda: create(snaps[0], category="cloud", level=None))
    codes["category_ephemeral"] = sdk_error(
        h, log, "CreateDisk", "InvalidDiskCategory.NotSupported",
        lambda: create(snaps[0], category="elastic_ephemeral_disk_standard", level=None))
    codes["category_unknown"] = sdk_error(
        h, log, "CreateDisk", "InvalidDiskCategory.ValueNotSupported",
        lambda: create(snaps[0], category="cloud_contract_nosuch", level=None))

    # AttachDisk (as appsnap does: DeleteWithInstance=true); the second disk
    # stays Available, so one DescribeDisks shows both shapes.
    if a.no_device:
        h.post_faults(a, {"attach_no_device": {"times": 1}})
    r = c.attach_disk(M.AttachDiskRequest(
        instance_id=a.instance, disk_id=ids[0], delete_with_instance=True))
    h.check_answer("AttachDisk", log.by_request_id(r.body.request_id)["answer"], "json",
                       complete=True)
    wait_status(c, a, ids[0], "In_use")
    r = describe(c, a, ids)
    check_disks(h, log, r, "json")
    ds = {d.disk_id: d for d in r.body.disks.disk}
    att, avail = ds[ids[0]], ds[ids[1]]
    problems = []
    if att.instance_id != a.instance or att.delete_with_instance is not True:
        problems.append(f"attached: {att.to_map()}")
    if avail.instance_id or avail.delete_with_instance:
        problems.append(f"available: {avail.to_map()}")
    h.row("DescribeDisks", "attached + available (SDK)", "json", 2, problems)
    write(a, "DescribeDisks.created.json", r.body.to_map())
    check_device(h, a, att.disk_id, att.serial_number)

    codes["delete_attached"] = sdk_error(
        h, log, "DeleteDisk", "IncorrectDiskStatus",
        lambda: c.delete_disk(M.DeleteDiskRequest(disk_id=ids[0])))
    code, text = h.sim_call(a, "DeleteDisk", [("DiskId", ids[0])], xml=True)
    root = ET.fromstring(text.encode())
    body = {child.tag: child.text or "" for child in root}
    h.row("DeleteDisk", "<Error> root", "error-xml", 1,
          [] if root.tag == "Error" and body.get("Code") == "IncorrectDiskStatus"
          else [f"root <{root.tag}> code {body.get('Code')!r}"])
    h.check_error_body("DeleteDisk", body, "error-xml")

    # DetachDisk: the link goes at once, the disk is Available later.
    r = c.detach_disk(M.DetachDiskRequest(instance_id=a.instance, disk_id=ids[0]))
    h.check_answer("DetachDisk", log.by_request_id(r.body.request_id)["answer"], "json",
                       complete=True)
    d = created(a, ids[0])
    h.row("DetachDisk", "/_sim/state", "device", 1,
          [] if not d["loop_device"] and not (d["link"] and os.path.lexists(d["link"]))
          else [f"device or link still there after DetachDisk: {d}"])
    wait_status(c, a, ids[0], "Available")
    r = describe(c, a, [ids[0]])
    check_disks(h, log, r, "json")
    codes["detach_detached"] = sdk_error(
        h, log, "DetachDisk", "InvalidDisk.AlreadyDetached",
        lambda: c.detach_disk(M.DetachDiskRequest(instance_id=a.instance, disk_id=ids[0])))

    # DeleteDisk both; DescribeDisks by tag then lists none.
    for disk_id in ids:
        r = c.delete_disk(M.DeleteDiskRequest(disk_id=disk_id))
        h.check_answer("DeleteDisk", log.by_request_id(r.body.request_id)["answer"], "json",
                       complete=True)
    r = c.describe_disks(by_tag)
    h.row("DescribeDisks", "by Tag.1 after delete", "json", 0,
          [] if not r.body.disks.disk else [f"still listed: {r.body.to_map()}"])
    h.check_answer("DescribeDisks", log.by_request_id(r.body.request_id)["answer"], "json")

    write(a, "DiskErrors.json", codes)


def write(a, name, value):
    """One file for tests/contract_decode.rs, next to the maximal answers."""
    if a.maximal_out:
        os.makedirs(a.maximal_out, exist_ok=True)
        with open(os.path.join(a.maximal_out, name), "w") as f:
            json.dump(value, f, indent=1, sort_keys=True)
            f.write("\n")


def check_device(h, a, disk_id, serial):
    """The attached disk's loop device and its by-id link, named by the
    serial DescribeDisks reports (what appsnap's find_serial looks for)."""
    problems = []
    d = created(a, disk_id)
    want = os.path.join(a.by_id, f"virtio-{serial[:20]}")
    if a.no_device:
        if d["loop_device"] or os.path.lexists(want):
            problems.append(f"attach_no_device, yet a device: {d}")
        h.row("AttachDisk", "no device (not root)", "device", 1, problems)
        return
    for _ in range(200):
        if os.path.islink(want):
            break
        time.sleep(0.05)
    d = created(a, disk_id)
    if not os.path.islink(want):
        problems.append(f"no link {want} (emulator: {d})")
    elif not os.readlink(want).startswith("/dev/loop") or os.readlink(want) != d["loop_device"]:
        problems.append(f"{want} -> {os.readlink(want)}, emulator says {d['loop_device']}")
    h.row("AttachDisk", "by-id link -> loop device", "device", 1, problems)
