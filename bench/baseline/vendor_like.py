"""The cloud half of the vendor-like baseline (vendor_like.sh), with the
official SDK (alibabacloud-ecs20140526). It imports the SDK and builds the
client *before* the freeze and then waits for "go" on stdin, because the
vendor plugin is one process that is already running when it freezes: its
start-up is not in its window, so this one's is not either.

After "go": CreateSnapshotGroup, then DescribeSnapshotGroups every
POLL_MS until the group lists one snapshot per disk, each Available (or the
group is accomplished), as the vendor plugin's own log shows it doing
("Unexpected length of the snapshot group" until every member is listed,
then progress queries) before it thaws. Protocol on stdout, one line each:
"ready", "answered <ssg-id>", "listed <polls>"; "error <text>" and exit 1 on
any failure, so the script thaws at once.

Environment: ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET,
ECS_ENDPOINT (host:port), ECS_REGION, ECS_INSTANCE, ECS_DISKS
(comma-separated); VENDOR_POLL_MS (default 100), VENDOR_DEADLINE_MS
(default 20000: give up, like the plugin's TimeoutInSeconds).
"""
import os
import sys
import time

from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client
from alibabacloud_tea_openapi import models as open_api_models


def say(line):
    print(line, flush=True)


region = os.environ["ECS_REGION"]
disks = os.environ["ECS_DISKS"].split(",")
poll_s = int(os.environ.get("VENDOR_POLL_MS", "100")) / 1000
deadline_s = int(os.environ.get("VENDOR_DEADLINE_MS", "20000")) / 1000
client = Client(
    open_api_models.Config(
        access_key_id=os.environ["ALIBABA_CLOUD_ACCESS_KEY_ID"],
        access_key_secret=os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"],
        endpoint=os.environ["ECS_ENDPOINT"],
        protocol="http",
        region_id=region,
    )
)
create = ecs_models.CreateSnapshotGroupRequest(
    region_id=region,
    instance_id=os.environ["ECS_INSTANCE"],
    disk_id=disks,
    name="vendorlike",
)


def usable(group):
    """One snapshot per disk listed and each Available, or the group done."""
    if group.status == "accomplished":
        return True
    snaps = group.snapshots.snapshot if group.snapshots else []
    listed = {s.source_disk_id for s in snaps or []}
    return listed >= set(disks) and all(s.available for s in snaps)


say("ready")
if sys.stdin.readline().strip() != "go":
    sys.exit(1)
try:
    start = time.monotonic()
    ssg = client.create_snapshot_group(create).body.snapshot_group_id
    say(f"answered {ssg}")
    describe = ecs_models.DescribeSnapshotGroupsRequest(
        region_id=region, snapshot_group_id=[ssg]
    )
    polls = 0
    while True:
        polls += 1
        groups = client.describe_snapshot_groups(describe).body.snapshot_groups
        found = groups.snapshot_group if groups else []
        if found and found[0].status == "failed":
            raise RuntimeError(f"snapshot group {ssg} failed")
        if found and usable(found[0]):
            break
        if time.monotonic() - start > deadline_s:
            raise RuntimeError(f"snapshot group {ssg} not usable after {deadline_s} s")
        time.sleep(poll_s)
    say(f"listed {polls}")
except Exception as e:  # report and fail: the script thaws on any line but "listed"
    say(f"error {type(e).__name__}: {e}".replace("\n", " "))
    sys.exit(1)
