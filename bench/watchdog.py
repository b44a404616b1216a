#!/usr/bin/env python3
"""Watchdog benchmark: one real `shoal agent` running tasks, `kill -9`ed.

Measures, per run:
  - kill: from `kill -9` of the agent until the last task process is gone (polled from /proc
    every 5 ms), against the orphan grace;
  - RSS of the watchdog (VmRSS, RssAnon, RssFile and Pss from /proc) while it guards the tasks.
Each task is `sh -c 'setsid sleep M & sleep M & exec sleep M'` (a child that left the process
group, one that stayed, and the main process), so the kill must reach escaped children too
(by cgroup; without cgroups the setsid child survives, and the run says so).

Usage: bench/watchdog.py [--runs 5] [--tasks 4] [--grace-ms 3000] [--out FILE]
Needs a release build: cargo build --release
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "shoal")


def marked(marker):
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in args and state != "Z":
            pids.append(int(pid))
    return sorted(pids)


def watchdog_of(data_dir):
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if len(args) > 1 and args[1] == b"watchdog" and data_dir.encode() in args:
            return int(pid)
    return None


def memory(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                out["Pss"] = int(line.split()[1])
    return out


def wait(what, probe, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    sys.exit(f"timed out waiting until {what}")


def one_run(n, args, root):
    data_dir = os.path.join(root, f"n{n}")
    key = os.path.join(root, "key")
    log = open(os.path.join(root, f"agent{n}.log"), "w")
    agent = subprocess.Popen(
        [BIN, "agent", "--name", "n1", "--bind", "127.0.0.1:0", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0",
         "--cpu", "8000", "--memory", "8192", "--cluster-key-file", key, "--data-dir", data_dir,
         "--orphan-grace-ms", str(args.grace_ms)],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    addresses = os.path.join(data_dir, "addresses.json")
    wait("the agent is up", lambda: os.path.exists(addresses))
    api = "http://" + json.load(open(addresses))["http"]
    marker = f"9999.{os.getpid()}{n:03}"
    spec = {"id": "orphans", "type": "service", "count": args.tasks, "command": "sh",
            "args": ["-c", f"setsid sleep {marker} & sleep {marker} & exec sleep {marker}"],
            "resources": {"cpu": 10, "memory": 16}}
    job = os.path.join(root, f"job{n}.json")
    json.dump(spec, open(job, "w"))
    subprocess.run([BIN, "job", "run", job, "--detach", "--addr", api], check=True,
                   stdout=subprocess.DEVNULL)
    pids = wait("every task process runs", lambda: (lambda p: p if len(p) == 3 * args.tasks else None)(marked(marker)))
    limits = json.load(urllib.request.urlopen(api + "/v1/agent/self"))["limits"]
    watchdog = watchdog_of(os.path.abspath(data_dir))
    mem = memory(watchdog)
    agent.kill()
    killed = time.monotonic()
    while marked(marker) and time.monotonic() - killed < args.grace_ms / 1000 + 30:
        time.sleep(0.005)
    took = time.monotonic() - killed
    left = marked(marker)
    agent.wait()
    for p in left:
        os.kill(p, 9)
    return {"kill_ms": round(took * 1000), "left": left, "processes": len(pids),
            "watchdog": mem, "kill_method": limits["kill"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--grace-ms", type=int, default=3000)
    p.add_argument("--out")
    args = p.parse_args()
    root = tempfile.mkdtemp(prefix="shoal-wd-bench-")
    os.chmod(root, 0o1777)
    key = subprocess.run([BIN, "keygen"], check=True, capture_output=True).stdout
    open(os.path.join(root, "key"), "wb").write(key)
    runs = [one_run(n, args, root) for n in range(args.runs)]
    kills = [r["kill_ms"] for r in runs]
    result = {
        "grace_ms": args.grace_ms,
        "tasks": args.tasks,
        "kill_ms": kills,
        "kill_ms_median": statistics.median(kills),
        "kill_ms_max": max(kills),
        "left_behind": sum(len(r["left"]) for r in runs),
        "kill_method": runs[0]["kill_method"],
        "watchdog_kib": runs[0]["watchdog"],
    }
    print(json.dumps(result, indent=2))
    if args.out:
        json.dump(result, open(args.out, "w"), indent=2)


if __name__ == "__main__":
    main()
