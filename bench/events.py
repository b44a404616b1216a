#!/usr/bin/env python3
"""Event stream benchmark (issue 16): task start → `Task/Started` delivered on GET /v1/events.

One real agent on 127.0.0.1 (every task starts on the node whose stream is read). A client
follows `GET /v1/events?topic=Task` and submits --tasks single-task service jobs one after
another, each waiting for its `Started` event before the next. Each task's first action is
`date +%s%N` into a file: its own start as the process sees it. Two figures, p50/p99/max:

  - fork → delivered: arrival minus the task process's start as the kernel records it
    (`/proc/PID/stat` starttime, in clock ticks since boot: 10 ms resolution, placed on the
    wall clock through `/proc/uptime`). The executor's spawn, its report, the scheduler task,
    the ring, SSE and the socket;
  - shell → delivered: arrival minus the task's own first `date +%s%N`. Negative when the
    shell gets to `date` after the start was already delivered (a loaded host delays it);
  - recorded → delivered: arrival minus the event's `time_ms` (the ring and SSE alone;
    millisecond resolution).

Usage: bench/events.py [--tasks 200] [--out FILE] [--bin PATH]   (default target/release/shoal)
"""
import argparse, http.client, json, os, queue, statistics, subprocess, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def start_agent(root, binary):
    key = os.path.join(root, "cluster.key")
    with open(key, "w") as f:
        f.write(subprocess.check_output([binary, "keygen"]).decode())
    os.chmod(key, 0o600)
    d = os.path.join(root, "n1"); os.makedirs(d)
    log = open(os.path.join(root, "n1.log"), "w")
    p = subprocess.Popen([binary, "agent", "--name", "n1", "--bind", "127.0.0.1:0", "--http", "127.0.0.1:0",
                          "--dns", "off", "--cluster-key-file", key, "--data-dir", d,
                          "--cpu", "1000000", "--memory", "1000000"],
                         stdout=log, stderr=log, env=dict(os.environ, RUST_LOG=os.environ.get("SHOAL_BENCH_LOG", "warn")))
    for _ in range(3000):
        try:
            info = json.load(open(os.path.join(d, "addresses.json"))); break
        except (OSError, ValueError): time.sleep(0.01)
    return p, info

def follow(addr, out):
    """Puts (arrival ns, event) for every event of the stream."""
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port))
    c.request("GET", "/v1/events?topic=Task")
    r = c.getresponse()
    assert r.status == 200, r.status
    while True:
        line = r.fp.readline()
        if not line: return
        if line.startswith(b"data:"):
            out.put((time.time_ns(), json.loads(line[5:])))

CLK_TCK = os.sysconf("SC_CLK_TCK")

def forked_at(pid):
    """Unix seconds when process `pid` was forked, from /proc (10 ms resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        starttime = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return time.time() - uptime + starttime / CLK_TCK

def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def summary(xs):
    return {"p50_ms": round(pct(xs, 50), 3), "p99_ms": round(pct(xs, 99), 3), "max_ms": round(max(xs), 3),
            "n": len(xs)}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--out")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "shoal"))
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="shoal-bench-events-")
    # Tasks of a root agent run as `nobody`: they must reach the data dir and write stamps.
    os.chmod(root, 0o755)
    stamps = os.path.join(root, "stamps"); os.makedirs(stamps); os.chmod(stamps, 0o777)
    p, info = start_agent(root, a.bin)
    try:
        token = open(info["token_file"]).read().strip()
        host, port = info["http"].rsplit(":", 1)
        api = http.client.HTTPConnection(host, int(port), timeout=60)
        for _ in range(3000):
            api.request("GET", "/v1/nodes"); nodes = json.loads(api.getresponse().read())
            if nodes and nodes[0]["resources"]["capacity"]["cpu_millicores"] > 0: break
            time.sleep(0.01)
        events = queue.Queue()
        threading.Thread(target=follow, args=(info["http"], events), daemon=True).start()
        start_to_delivered, recorded_to_delivered, fork_to_delivered = [], [], []
        for i in range(a.tasks):
            jid = f"ev{i}"
            stamp = os.path.join(stamps, jid)
            spec = {"id": jid, "type": "service", "count": 1, "command": "sh",
                    "args": ["-c", f"date +%s%N > {stamp}.tmp && mv {stamp}.tmp {stamp}; exec sleep 600"],
                    "resources": {"cpu": 1, "memory": 1}}
            api.request("POST", "/v1/jobs", body=json.dumps(spec),
                        headers={"content-type": "application/json", "authorization": f"Bearer {token}"})
            r = api.getresponse(); body = r.read(); assert r.status in (200, 202), (r.status, body)
            while True:
                arrived, e = events.get(timeout=60)
                if e["type"] == "Started" and e["payload"]["job"] == jid: break
            for _ in range(5000):
                if os.path.exists(stamp): break
                time.sleep(0.001)
            fork_to_delivered.append(arrived / 1e6 - forked_at(e["payload"]["pid"]) * 1e3)
            started = int(open(stamp).read())
            start_to_delivered.append((arrived - started) / 1e6)
            recorded_to_delivered.append(arrived / 1e6 - e["time_ms"])
            # Stop it, so the host does not pile up sleeping processes.
            api.request("DELETE", f"/v1/jobs/{jid}", headers={"authorization": f"Bearer {token}"})
            api.getresponse().read()
        commit = subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).decode().strip()
        result = {"commit": commit, "binary": a.bin, "tasks": a.tasks,
                  "fork_to_delivered": summary(fork_to_delivered),
                  "shell_to_delivered": summary(start_to_delivered),
                  "recorded_to_delivered": summary(recorded_to_delivered)}
        print(json.dumps(result, indent=2))
        if a.out:
            with open(a.out, "w") as f: json.dump(result, f, indent=2)
    finally:
        p.terminate(); p.wait(timeout=30)

if __name__ == "__main__":
    main()
