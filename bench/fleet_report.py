#!/usr/bin/env python3
"""bench/fleet's measuring and reporting side (a benchmark, not a test).

  sample --pids "P..." --bin BIN           the daemons' RSS and CPU now (JSON)
  wait   --work W --n N --minute EPOCH --timeout S --pids "P..." --bin BIN --samples F
         until every instance's job record is for that minute; meanwhile the
         peak RSS of all appsnap processes, sampled every second
  row    --work W --n N --mode M --minute EPOCH --idle F --samples F --single F --rates F
         one JSON row of results; the per-10-s API table goes to --rates
  table  --rows F --single F --single-writer F --create-rate R ...
         the Markdown table
"""

import argparse
import collections
import datetime as dt
import json
import os
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def parse_time(s):
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def pct(values, p):
    """Nearest-rank percentile; 0 for no values."""
    v = sorted(values)
    if not v:
        return 0
    r = max(1, int(-(-p * len(v) // 100)))
    return v[min(r, len(v)) - 1]


def proc_stat(pid):
    """(rss_kb, cpu_ticks incl. reaped children) of one process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[0] is state (field 3); utime is field 14.
        cpu = sum(int(x) for x in fields[11:15])
        with open(f"/proc/{pid}/status") as f:
            rss = next((int(l.split()[1]) for l in f if l.startswith("VmRSS:")), 0)
        return rss, cpu
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def sample(pids):
    rss = cpu = alive = 0
    for p in pids:
        s = proc_stat(p)
        if s:
            rss += s[0]
            cpu += s[1]
            alive += 1
    return {"rss_kb": rss, "cpu_ticks": cpu, "alive": alive}


def all_of(binary):
    """RSS (kB) of every process running `binary` (daemons and freeze guards)."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/exe") != binary:
                continue
            with open(f"/proc/{name}/status") as f:
                total += next((int(l.split()[1]) for l in f if l.startswith("VmRSS:")), 0)
        except (OSError, StopIteration, ValueError):
            continue
    return total


def record(work, i):
    try:
        with open(f"{work}/inst{i}/state/jobs/db.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def cmd_sample(a):
    print(json.dumps(sample([int(p) for p in a.pids.split()])))


def cmd_wait(a):
    pids = [int(p) for p in a.pids.split()]
    deadline = time.time() + a.timeout
    peak = 0
    done = 0
    while time.time() < deadline:
        peak = max(peak, all_of(os.path.realpath(a.bin)))
        done = 0
        for i in range(a.n):
            r = record(a.work, i)
            if r and r.get("scheduled_for") and parse_time(r["scheduled_for"]) == a.minute:
                done += 1
        if done == a.n:
            break
        time.sleep(1)
    end = sample(pids)
    end["peak_rss_kb"] = peak
    end["done"] = done
    with open(a.samples, "w") as f:
        json.dump(end, f)
    return 0 if done == a.n else 1


API_GROUPS = ["CreateSnapshotGroup", "Describe*", "TagResources", "other"]


def group_of(action):
    if action == "CreateSnapshotGroup" or action == "TagResources":
        return action
    if action and action.startswith("Describe"):
        return "Describe*"
    return "other"


def cmd_row(a):
    recs = [record(a.work, i) for i in range(a.n)]
    mine = [r for r in recs if r and r.get("scheduled_for") and parse_time(r["scheduled_for"]) == a.minute]
    ok = sum(1 for r in mine if r.get("exit_code") == 0)
    last = max((parse_time(r["finished_at"]) - a.minute for r in mine), default=0)
    frozen = [r.get("frozen_ms") or 0 for r in mine]
    writer = []
    try:
        with open(f"{a.work}/writer.out") as f:
            for line in f:
                k, longest, _ = line.split()
                if int(k) < a.n:
                    writer.append(int(longest) / 1e6)
    except OSError:
        pass
    lines = []
    with open(f"{a.work}/requests.jsonl") as f:
        for line in f:
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    ecs = [l for l in lines if l.get("service") == "ecs"]
    imds = [l for l in lines if l.get("service") == "imds"]
    throttled = [l for l in ecs if str(l.get("code") or "").startswith("Throttling")]
    # Throttled while frozen: CreateSnapshotGroup (only ever called frozen),
    # or the listing poll inside the window, as each daemon's log tells.
    in_freeze = {l.get("instance") for l in throttled if l.get("action") == "CreateSnapshotGroup"}
    for i in range(a.n):
        try:
            with open(f"{a.work}/inst{i}/daemon.log", errors="replace") as f:
                if any("throttled" in l and "while frozen" in l for l in f):
                    in_freeze.add(f"i-bp1fleet{i:010d}")
        except OSError:
            pass
    # An unsigned HEAD before the freeze warms the connection (no action).
    by_action = collections.Counter(l.get("action") or "(warm-up HEAD)" for l in ecs)
    # Per 10 s after the minute, per API: accepted / throttled.
    buckets = collections.defaultdict(lambda: collections.Counter())
    for l in ecs:
        t = parse_time(l["time"]) - a.minute
        b = int(t // 10) * 10
        g = group_of(l.get("action"))
        kind = "t" if str(l.get("code") or "").startswith("Throttling") else "a"
        buckets[b][(g, kind)] += 1
    with open(a.rates, "w") as f:
        f.write(f"ECS answers per second by API, N = {a.n}, {a.mode} (accepted / throttled, averaged over 10 s):\n\n")
        f.write("| seconds after the minute | " + " | ".join(API_GROUPS) + " |\n")
        f.write("|---|" + "---|" * len(API_GROUPS) + "\n")
        for b in sorted(buckets):
            c = buckets[b]
            cells = [f"{c[(g, 'a')] / 10:.1f} / {c[(g, 't')] / 10:.1f}" for g in API_GROUPS]
            f.write(f"| {b}–{b + 10} | " + " | ".join(cells) + " |\n")
    with open(a.idle) as f:
        idle = json.load(f)
    with open(a.samples) as f:
        end = json.load(f)
    n = max(1, a.n)
    row = {
        "n": a.n,
        "mode": a.mode,
        "ok": ok,
        "done": len(mine),
        "last_s": round(last, 1),
        "frozen": [pct(frozen, 50), pct(frozen, 99), max(frozen, default=0)],
        "writer": [round(pct(writer, 50)), round(pct(writer, 99)), round(max(writer, default=0))],
        "writers": len(writer),
        "runs_throttled_in_freeze": len(in_freeze),
        "throttled": len(throttled),
        "ecs_per_run": round(len(ecs) / n, 1),
        "imds_per_run": round(len(imds) / n, 1),
        "by_action": {k: round(v / n, 2) for k, v in sorted(by_action.items())},
        "idle_rss_mb": round(idle["rss_kb"] / 1024),
        "idle_rss_per_daemon_mb": round(idle["rss_kb"] / 1024 / n, 1),
        "peak_rss_mb": round(end["peak_rss_kb"] / 1024),
        "cpu_s": round((end["cpu_ticks"] - idle["cpu_ticks"]) / TICK, 1),
    }
    print(json.dumps(row))


def cmd_table(a):
    single = []
    try:
        with open(a.single) as f:
            single = [int(x) for x in f.read().split()]
    except OSError:
        pass
    single_writer = 0
    try:
        with open(a.single_writer) as f:
            single_writer = max((int(l.split()[1]) / 1e6 for l in f if l.strip()), default=0)
    except OSError:
        pass
    rows = []
    with open(a.rows) as f:
        rows = [json.loads(l) for l in f if l.strip()]
    print(
        f"Account flow control, per API: CreateSnapshotGroup {a.create_rate}/s, each Describe* API {a.describe_rate}/s, "
        f"TagResources {a.tag_rate}/s; CreateSnapshotGroup answers after {a.latency_ms} ms.\n"
    )
    if single:
        print(
            f"One instance alone, {len(single)} runs: freeze window median {pct(single, 50)} ms, "
            f"p99 {pct(single, 99)} ms, max {max(single)} ms; its writer's longest blocked write {single_writer:.0f} ms.\n"
        )
    print(
        "| N | mode | jobs ok | last job done (s after the minute) | freeze window median / p99 / max (ms) "
        "| writers' longest blocked write median / p99 / max (ms; writers) | runs throttled inside a freeze "
        "| throttled answers | ECS calls per run | IMDS calls per run | memory: idle daemons / peak (MiB) | CPU (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f = " / ".join(str(x) for x in r["frozen"])
        w = " / ".join(str(x) for x in r["writer"]) + f" ({r.get('writers', '?')})"
        print(
            f"| {r['n']} | {r['mode']} | {r['ok']}/{r['n']} | {r['last_s']} | {f} | {w} | "
            f"{r['runs_throttled_in_freeze']} | {r['throttled']} | {r['ecs_per_run']} | {r['imds_per_run']} | "
            f"{r['idle_rss_mb']} ({r['idle_rss_per_daemon_mb']} each) / {r['peak_rss_mb']} | {r['cpu_s']} |"
        )
    print("\nECS calls per run, by action:\n")
    actions = sorted({k for r in rows for k in r["by_action"]})
    print("| N | mode | " + " | ".join(actions) + " |")
    print("|---|---|" + "---|" * len(actions))
    for r in rows:
        print(f"| {r['n']} | {r['mode']} | " + " | ".join(str(r["by_action"].get(k, 0)) for k in actions) + " |")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--pids", required=True)
    s.add_argument("--bin", required=True)
    w = sub.add_parser("wait")
    for k in ["--work", "--pids", "--bin", "--samples"]:
        w.add_argument(k, required=True)
    w.add_argument("--n", type=int, required=True)
    w.add_argument("--minute", type=int, required=True)
    w.add_argument("--timeout", type=int, default=900)
    r = sub.add_parser("row")
    for k in ["--work", "--mode", "--idle", "--samples", "--single", "--rates"]:
        r.add_argument(k, required=True)
    r.add_argument("--n", type=int, required=True)
    r.add_argument("--minute", type=int, required=True)
    t = sub.add_parser("table")
    for k in ["--rows", "--single", "--single-writer", "--create-rate", "--describe-rate", "--tag-rate", "--latency-ms"]:
        t.add_argument(k, required=True)
    a = p.parse_args()
    return {"sample": cmd_sample, "wait": cmd_wait, "row": cmd_row, "table": cmd_table}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
