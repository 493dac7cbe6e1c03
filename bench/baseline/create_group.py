"""The CreateSnapshotGroup call of the hand-made baseline, as an operator
writes it with the official SDK (alibabacloud-ecs20140526). Started inside
the freeze window on purpose: interpreter start-up and the SDK import are
part of what a hand-made script costs.

Environment: ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET,
ECS_ENDPOINT (host:port), ECS_REGION, ECS_INSTANCE, ECS_DISKS (comma-separated).
"""
import os
import sys

from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client
from alibabacloud_tea_openapi import models as open_api_models

config = open_api_models.Config(
    access_key_id=os.environ["ALIBABA_CLOUD_ACCESS_KEY_ID"],
    access_key_secret=os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"],
    endpoint=os.environ["ECS_ENDPOINT"],
    protocol="http",
    region_id=os.environ["ECS_REGION"],
)
request = ecs_models.CreateSnapshotGroupRequest(
    region_id=os.environ["ECS_REGION"],
    instance_id=os.environ["ECS_INSTANCE"],
    disk_id=os.environ["ECS_DISKS"].split(","),
    name="handmade",
)
try:
    response = Client(config).create_snapshot_group(request)
except Exception as e:  # the operator's script reports and fails
    print(f"CreateSnapshotGroup failed: {e}", file=sys.stderr)
    sys.exit(1)
print(response.body.snapshot_group_id)
