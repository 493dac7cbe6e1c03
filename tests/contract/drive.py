"""The contract lane's driver: the official SDK against the emulator.

1. Drives every action appsnap calls with the official SDK itself (proof it
   parses the answers), with lists of two and tags on everything, reads each
   answer back from the emulator's request log, and checks every key it
   sent exists in the SDK's response model with the model's type; the same
   for XML answers (asked through ecs-sim-call --xml) and error bodies.
   The restore drill's disk actions are driven by disks.py (CreateDisk,
   DescribeDisks by id and tag, AttachDisk with a real loop device,
   DetachDisk, DeleteDisk, their documented errors; all released at the end).
2. Writes one maximal answer per action (every model field, lists of two)
   for appsnap's decoders (tests/contract_decode.rs).
3. Prints a table; exits 1 on any mismatch.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET

from alibabacloud_ecs20140526 import models as M
from alibabacloud_ecs20140526.client import Client
from alibabacloud_tea_openapi import models as om

import disks
import sdkmodels

ACTIONS = [
    "DescribeDisks",
    "CreateSnapshotGroup",
    "DescribeSnapshotGroups",
    "DescribeSnapshots",
    "TagResources",
    "DeleteSnapshotGroup",
    "CreateDisk",
    "AttachDisk",
    "DetachDisk",
    "DeleteDisk",
]
# What an ECS error body may hold: the fields the SDK reads from it
# (alibabacloud_tea_openapi client: Code, Message, RequestId, HostId,
# AccessDeniedDetail) plus the gateway's Recommend link.
ERROR_KEYS = {"RequestId": str, "HostId": str, "Code": str, "Message": str, "Recommend": str}

rows = []  # (action, model, mode, keys, result)


def row(action, model, mode, keys, problems):
    rows.append((action, model, mode, keys, "ok" if not problems else "MISMATCH"))
    for p in problems:
        print(f"  {action} [{mode}]: {p}", file=sys.stderr)


class Log:
    def __init__(self, path):
        self.path = path

    def by_request_id(self, rid):
        for _ in range(100):
            with open(self.path) as f:
                for line in f:
                    v = json.loads(line)
                    if v.get("request_id") == rid:
                        return v
            time.sleep(0.05)
        raise SystemExit(f"request {rid} not in the request log {self.path}")


def check_answer(action, answer, mode, complete=False):
    """Model keys and types, the SDK's round trip both ways; `complete`:
    every field of the (small) model must be there too."""
    cls = sdkmodels.body_class(action)
    keys, problems = sdkmodels.check(cls, answer)
    if complete:
        problems += [f"{k}: missing (a field of {cls.__name__})"
                     for _, k, _, _ in sdkmodels.fields(cls) if k not in answer]
    lost = sdkmodels.roundtrip_keys(cls, answer)
    problems += [f"{k}: dropped by {cls.__name__}.from_map" for k in lost]
    added = sdkmodels.roundtrip_added(cls, answer)
    problems += [f"{k}: not in the answer but in {cls.__name__}.to_map" for k in added]
    row(action, cls.__name__, mode, keys, problems)


def sdk_client(a, v1=False):
    cfg = om.Config(
        access_key_id=a.ak,
        access_key_secret=a.secret,
        endpoint=a.ecs.split("://", 1)[1],
        protocol="http",
        region_id=a.region,
    )
    if v1:
        cfg.signature_algorithm = "v2"
    return Client(cfg)


def sim_call(a, action, params, xml):
    cmd = [a.call, "--imds", a.imds, "--ecs", a.ecs] + (["--xml"] if xml else []) + [action]
    cmd += [f"{k}={v}" for k, v in params]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout.strip()


def drop_empty_lists(v):
    """XML has no element for an empty list; JSON has `[]`."""
    if isinstance(v, dict):
        return {k: drop_empty_lists(x) for k, x in v.items() if x != []}
    if isinstance(v, list):
        return [drop_empty_lists(x) for x in v]
    return v


def check_xml(a, action, params):
    code, text = sim_call(a, action, params, xml=True)
    problems = []
    if code != 0:
        row(action, "-", "xml", 0, [f"ecs-sim-call exit {code}: {text[:300]}"])
        return
    if not text.startswith("<?xml version='1.0' encoding='UTF-8'?>"):
        problems.append(f"no XML declaration: {text[:80]}")
    root = ET.fromstring(text.encode())
    if root.tag != f"{action}Response":
        problems.append(f"root <{root.tag}>, expected <{action}Response>")
    cls = sdkmodels.body_class(action)
    as_json, pr = sdkmodels.from_xml(cls, root)
    problems += pr
    keys, pr = sdkmodels.check(cls, as_json)
    problems += pr
    # The same request asked in JSON says the same thing.
    code, text = sim_call(a, action, params, xml=False)
    js = json.loads(text)
    for v in (js, as_json):
        v.pop("RequestId", None)
    if drop_empty_lists(js) != drop_empty_lists(as_json):
        problems.append(f"XML and JSON answers differ:\n    xml  {as_json}\n    json {js}")
    row(action, cls.__name__, "xml", keys, problems)


def check_error_body(action, body, mode):
    problems = []
    for k, v in body.items():
        if k not in ERROR_KEYS:
            problems.append(f"{k}: not a field of an ECS error body")
        elif not isinstance(v, ERROR_KEYS[k]):
            problems.append(f"{k}: expected str, got {type(v).__name__}")
    for k in ("RequestId", "Code", "Message"):
        if k not in body:
            problems.append(f"{k}: missing")
    row(action, "error body", mode, len(body), problems)


def post_faults(a, plan):
    req = urllib.request.Request(
        a.ecs + "/_sim/faults", data=json.dumps(plan).encode(), method="POST",
        headers={"content-type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=10).read()


def wait_accomplished(c, a, gid):
    for _ in range(400):
        r = c.describe_snapshot_groups(M.DescribeSnapshotGroupsRequest(
            region_id=a.region, snapshot_group_id=[gid]))
        g = r.body.snapshot_groups.snapshot_group
        if g and g[0].status == "accomplished":
            return
        time.sleep(0.05)
    raise SystemExit(f"group {gid} never accomplished")


def scenario(a):
    log = Log(a.log)
    c = sdk_client(a)
    tags2 = lambda T: [T(key="appsnap:job", value="db"), T(key="owner", value="ops")]

    # DescribeDisks, V3 and V1 (Format=json).
    for v1 in (False, True):
        r = sdk_client(a, v1).describe_disks(M.DescribeDisksRequest(
            region_id=a.region, instance_id=a.instance,
            disk_ids=json.dumps(a.disks), max_results=10))
        assert len(r.body.disks.disk) == 2, r.body.to_map()
        assert all(len(d.tags.tag) == 2 for d in r.body.disks.disk), r.body.to_map()
        check_answer("DescribeDisks", log.by_request_id(r.body.request_id)["answer"],
                     "json-v1" if v1 else "json")

    # Two groups of two disks, tagged at creation.
    groups = []
    for n in (1, 2):
        r = c.create_snapshot_group(M.CreateSnapshotGroupRequest(
            region_id=a.region, instance_id=a.instance, disk_id=a.disks,
            name=f"contract-{n}", description="contract lane group",
            tag=tags2(M.CreateSnapshotGroupRequestTag)))
        groups.append(r.body.snapshot_group_id)
        check_answer("CreateSnapshotGroup", log.by_request_id(r.body.request_id)["answer"], "json")
        wait_accomplished(c, a, r.body.snapshot_group_id)

    r = c.describe_snapshot_groups(M.DescribeSnapshotGroupsRequest(
        region_id=a.region, snapshot_group_id=groups))
    snaps = [s.snapshot_id for g in r.body.snapshot_groups.snapshot_group
             for s in g.snapshots.snapshot]
    assert len(snaps) == 4, r.body.to_map()

    r = c.tag_resources(M.TagResourcesRequest(
        region_id=a.region, resource_type="snapshot", resource_id=snaps,
        tag=tags2(M.TagResourcesRequestTag)))
    check_answer("TagResources", log.by_request_id(r.body.request_id)["answer"], "json")

    r = c.describe_snapshot_groups(M.DescribeSnapshotGroupsRequest(
        region_id=a.region, snapshot_group_id=groups))
    gs = r.body.snapshot_groups.snapshot_group
    assert len(gs) == 2 and all(len(g.tags.tag) == 2 for g in gs), r.body.to_map()
    assert all(len(s.tags.tag) == 2 for g in gs for s in g.snapshots.snapshot), r.body.to_map()
    check_answer("DescribeSnapshotGroups", log.by_request_id(r.body.request_id)["answer"], "json")

    r = c.describe_snapshots(M.DescribeSnapshotsRequest(
        region_id=a.region, instance_id=a.instance, max_results=10))
    assert len(r.body.snapshots.snapshot) == 4, r.body.to_map()
    assert all(len(s.tags.tag) == 2 for s in r.body.snapshots.snapshot), r.body.to_map()
    check_answer("DescribeSnapshots", log.by_request_id(r.body.request_id)["answer"], "json")

    # The restore drill's disk actions, on the first group's two snapshots.
    first = next(g for g in gs if g.snapshot_group_id == groups[0])
    disks.run(sys.modules[__name__], a, c, log, [s.snapshot_id for s in first.snapshots.snapshot])

    # XML, asked the way a client that does not ask for JSON asks.
    check_xml(a, "DescribeSnapshotGroups", [("RegionId", a.region), ("InstanceId", a.instance)])
    check_xml(a, "DescribeSnapshots", [("RegionId", a.region), ("InstanceId", a.instance)])
    check_xml(a, "DescribeDisks", [("RegionId", a.region), ("InstanceId", a.instance)])

    r = c.delete_snapshot_group(M.DeleteSnapshotGroupRequest(
        region_id=a.region, snapshot_group_id=groups[1]))
    assert len(r.body.operation_progress_set.operation_progress) == 2, r.body.to_map()
    check_answer("DeleteSnapshotGroup", log.by_request_id(r.body.request_id)["answer"], "json")

    # An error: the SDK raises with the emulator's code; the body holds only
    # an ECS error's fields (JSON and XML).
    try:
        c.delete_snapshot_group(M.DeleteSnapshotGroupRequest(
            region_id=a.region, snapshot_group_id="ssg-contractnosuch00"))
        raise SystemExit("deleting an unknown group succeeded")
    except Exception as e:  # the SDK's ClientException
        code = getattr(e, "code", None)
        rid = getattr(e, "request_id", None) or (getattr(e, "data", None) or {}).get("RequestId")
        problems = [] if code == "InvalidSnapshotGroupId.NotFound" else [f"SDK saw code {code!r}"]
        row("DeleteSnapshotGroup", type(e).__name__, "sdk-error", 1, problems)
        check_error_body("DeleteSnapshotGroup", log.by_request_id(rid)["answer"], "error-json")
    code, text = sim_call(a, "DeleteSnapshotGroup",
                          [("RegionId", a.region), ("SnapshotGroupId", "ssg-contractnosuch00")], xml=True)
    root = ET.fromstring(text.encode())
    body = {child.tag: child.text or "" for child in root}
    problems = [] if root.tag == "Error" else [f"root <{root.tag}>, expected <Error>"]
    row("DeleteSnapshotGroup", "<Error> root", "error-xml", 1, problems)
    check_error_body("DeleteSnapshotGroup", body, "error-xml")

    # Throttling with x-acs-retry-after: the SDK turns it into
    # ThrottlingException(retry_after=<ms>).
    post_faults(a, {"throttle_rps_per_key": 1, "retry_after_ms": 1500})
    seen = None
    for _ in range(10):
        try:
            c.describe_disks(M.DescribeDisksRequest(region_id=a.region))
        except Exception as e:
            seen = e
            break
    post_faults(a, {})
    problems = []
    if seen is None:
        problems.append("a burst of 10 at 1 rps was never throttled")
    elif type(seen).__name__ != "ThrottlingException" or getattr(seen, "retry_after", None) != 1500:
        problems.append(f"SDK raised {type(seen).__name__} retry_after={getattr(seen, 'retry_after', None)}")
    row("DescribeDisks", type(seen).__name__ if seen else "-", "throttled", 1, problems)


def write_maximal(out):
    os.makedirs(out, exist_ok=True)
    for action in ACTIONS:
        cls = sdkmodels.body_class(action)
        body = sdkmodels.maximal(cls)
        keys, problems = sdkmodels.check(cls, body)
        with open(os.path.join(out, f"{action}.json"), "w") as f:
            json.dump(body, f, indent=1, sort_keys=True)
            f.write("\n")
        row(action, cls.__name__, "maximal", keys, problems)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ecs")
    p.add_argument("--imds")
    p.add_argument("--call", help="ecs-sim-call binary")
    p.add_argument("--log", help="the emulator's request log")
    p.add_argument("--ak")
    p.add_argument("--secret")
    p.add_argument("--region")
    p.add_argument("--instance")
    p.add_argument("--disks", help="two disk ids, comma-separated")
    p.add_argument("--zone", help="the instance's zone (CreateDisk's ZoneId)")
    p.add_argument("--by-id", help="the emulator's [restore] by_id_dir")
    p.add_argument("--no-device", action="store_true",
                   help="not root: AttachDisk with the attach_no_device fault (no loop device)")
    p.add_argument("--maximal-out", help="write one maximal answer per action here")
    a = p.parse_args()
    if a.maximal_out:
        write_maximal(a.maximal_out)
    if a.ecs:
        a.disks = a.disks.split(",")
        scenario(a)
    print(f"{'action':<24} {'model class':<36} {'mode':<10} {'keys':>5}  result")
    for action, model, mode, keys, result in rows:
        print(f"{action:<24} {model:<36} {mode:<10} {keys:>5}  {result}")
    bad = sum(1 for r in rows if r[4] != "ok")
    print(f"{len(rows)} checks, {bad} mismatches")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
