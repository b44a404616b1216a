#!/usr/bin/env python3
"""Scheduling benchmark: 3 real agents (release build) on 127.0.0.1.

  - batch jobs of 1,000 and 10,000 tasks running `true`: end-to-end tasks/s from the POST to
    the last slot's exit 0, as the first agent's event stream (topic Attempt) tells it (before
    2026-12-05: to the first poll of the job view, every 0.5 s, that said `complete`; both are
    in the output, `seconds` and `seconds_polled`);
  - conflicts: re-placements after a rejection, per 1,000 placements (sum over slots of
    attempt - 1; `true` never fails, so every extra attempt is a rejected proposal);
  - submit→running latency for single-task service jobs (`sleep 30`), p50/p99 over --singles
    jobs, measured by the client: POST (acknowledged once durable on two nodes), then polling
    GET /v1/jobs/ID every 1 ms until the task is running;
  - CPU per task: user + system time of the three agents and of the tasks they reaped over
    each batch, per task, and how many of the machine's cores that kept busy;
  - agent RSS with the 10,000-task job in the tables;
  - the machine's spawn ceiling in the same run (bench/spawn_ceiling.c, compiled with cc): a
    small process's fork+exec+wait of /bin/true per second, one at a time and two in flight,
    measured before the agents start and again after the batches (issue 17 compares the
    end-to-end rate with the two-in-flight ceiling).

Usage: bench/scheduling.py [--sizes 1000,10000] [--singles 200] [--out FILE] [--bin PATH]
                           [--placement STRATEGY] [--max-launches N]

--bin runs another build (default target/release/shoal), so two builds can be compared in one
sitting; SHOAL_BENCH_LOG sets the agents' RUST_LOG (default warn).
"""
import argparse, collections, http.client, json, os, signal, statistics, subprocess, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "shoal")

def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"): return int(line.split()[1]) / 1024
    return 0.0

class Api:
    # Every change needs the agent's token (DATA_DIR/http.token, docs/security.md).
    def __init__(self, addr, token_file):
        host, port = addr.rsplit(":", 1); self.c = http.client.HTTPConnection(host, int(port), timeout=60)
        self.token = open(token_file).read().strip()
    def call(self, method, path, body=None):
        self.c.request(method, path, body=json.dumps(body) if body is not None else None,
                       headers={"content-type": "application/json", "authorization": f"Bearer {self.token}"})
        r = self.c.getresponse(); data = r.read()
        return r.status, (json.loads(data) if data else None)

def spawn_ceiling(root, n=2000):
    exe = os.path.join(root, "spawn_ceiling")
    if not os.path.exists(exe):
        subprocess.check_call(["cc", "-O2", "-o", exe, os.path.join(ROOT, "bench", "spawn_ceiling.c")])
    return json.loads(subprocess.check_output([exe, str(n)]))

def start_agents(root, key, BIN, extra=()):
    """Three agents n1..n3 under `root`, n2 and n3 joining n1; `extra` is added to every
    agent's command line. Returns once n1 lists all three alive with their capacity."""
    agents = []
    for i in range(1, 4):
        d = os.path.join(root, f"n{i}"); os.makedirs(d)
        args = [BIN, "agent", "--name", f"n{i}", "--bind", "127.0.0.1:0", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0",
                "--cluster-key-file", key, "--data-dir", d, "--cpu", "1000000", "--memory", "1000000", *extra]
        if agents: args += ["--join", agents[0]["gossip"]]
        log = open(os.path.join(root, f"n{i}.log"), "w")
        p = subprocess.Popen(args, stdout=log, stderr=log, env=dict(os.environ, RUST_LOG=os.environ.get("SHOAL_BENCH_LOG", "warn")))
        for _ in range(3000):
            try:
                info = json.load(open(os.path.join(d, "addresses.json"))); break
            except (OSError, ValueError): time.sleep(0.01)
        else: raise SystemExit(f"agent n{i} wrote no addresses.json in 30 s")
        agents.append({"proc": p, "http": info["http"], "gossip": info["gossip"], "token_file": info["token_file"]})
    api = Api(agents[0]["http"], agents[0]["token_file"])
    for _ in range(3000):
        _, nodes = api.call("GET", "/v1/nodes")
        if sum(1 for n in nodes if n["status"] == "alive" and n["resources"]["capacity"]["cpu_millicores"] > 0) == 3: break
        time.sleep(0.01)
    return agents

def cpu_parts(pids):
    """Per agent: CPU seconds (user + system) of the agent itself, and of the children it reaped
    (its tasks)."""
    tick = os.sysconf("SC_CLK_TCK"); parts = []
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = [int(x) for x in f.read().rsplit(")", 1)[1].split()[11:15]]
        parts.append((sum(fields[0:2]) / tick, sum(fields[2:4]) / tick))  # utime+stime, cutime+cstime
    return parts

def client_cpu_s():
    """CPU seconds (user + system) of this process, all its threads."""
    t = os.times(); return t.user + t.system

def cpu_s(pids):
    """CPU seconds (user + system) of the agents and of their children they reaped (the tasks)."""
    return sum(a + t for a, t in cpu_parts(pids))

class Exits:
    """Follows GET /v1/events?topic=Attempt on an agent (every node sees every attempt there) in
    a thread and notes when the last of a job's slots has exited 0: the end of a batch to the
    millisecond, where polling the job view (~20 ms of the agent's time per 10,000-task view)
    every 0.5 s would be up to 0.5 s late. `done_at` stays None if the stream says it missed
    events (the end is then the poll's)."""
    def __init__(self, addr, token_file, jid, n):
        self.jid, self.n, self.done_at, self.missed = jid, n, None, False
        self.ok = set(); self.ended = False
        host, port = addr.rsplit(":", 1)
        self.c = http.client.HTTPConnection(host, int(port), timeout=600)
        self.c.request("GET", "/v1/events?topic=Attempt", headers={"authorization": f"Bearer {open(token_file).read().strip()}"})
        self.r = self.c.getresponse(); assert self.r.status == 200, self.r.status
        threading.Thread(target=self.run, daemon=True).start()
    def following(self):
        return not (self.ended or self.missed)
    def run(self):
        try: self.read()
        finally: self.ended = True
    def read(self):
        while self.done_at is None:
            line = self.r.fp.readline()
            if not line: return
            if not line.startswith(b"data:"): continue
            # Only exits and the stream's own notices matter: the rest (placed, running, ...;
            # three of every four lines) is not parsed, so the client takes less of the CPU
            # the agents and their tasks share (its CPU is reported as client_ms_per_task).
            if b'"exited"' not in line and b'"Stream"' not in line: continue
            e = json.loads(line[5:]); p = e.get("payload", {})
            if e.get("topic") == "Stream": self.missed = True; continue
            if p.get("job") == self.jid and p.get("state") == "exited" and (p.get("detail") or {}).get("code") == 0:
                self.ok.add(p["slot"])
                if len(self.ok) == self.n and not self.missed: self.done_at = time.time()
    def close(self):
        try: self.c.sock.shutdown(2)
        except OSError: pass
        self.c.close()

def batch(api, n, idx, pids=(), placement=None, agent=None):
    jid = f"batch{n}-{idx}"
    spec = {"id": jid, "type": "batch", "count": n, "command": "true", "resources": {"cpu": 10, "memory": 1}}
    if placement: spec["placement"] = placement
    exits = Exits(agent["http"], agent["token_file"], jid, n) if agent else None
    p0 = cpu_parts(pids); c0 = cpu_s(pids); me0 = client_cpu_s(); t0 = time.time()
    st, body = api.call("POST", "/v1/jobs", spec)
    assert st in (200, 202), (st, body)
    last_poll = time.time()
    while True:
        # While the stream follows the batch, the job view (~20 ms of the agent's time for
        # 10,000 tasks) is polled only every 5 s (a job that failed never sees every slot exit
        # 0); it is read at once when the stream saw the end, or ended.
        if exits and exits.following() and not exits.done_at and time.time() - last_poll < 5:
            time.sleep(0.01); continue
        last_poll = time.time()
        if exits and exits.done_at: time.sleep(0.05)  # the job view catches up within a poll
        st, job = api.call("GET", f"/v1/jobs/{jid}")
        if job["status"] in ("complete", "failed"): break
        if not (exits and exits.done_at): time.sleep(0.05 if n <= 1000 else 0.5)
    polled = time.time() - t0
    cpu = cpu_s(pids) - c0; p1 = cpu_parts(pids); me = client_cpu_s() - me0
    assert job["status"] == "complete", job["status"]
    dt = (exits.done_at - t0) if exits and exits.done_at else polled
    if exits: exits.close()
    extra = sum((t["attempt"] or 1) - 1 for t in job["tasks"])
    return {"tasks": n, "seconds": round(dt, 3), "tasks_per_s": round(n / dt, 1),
            # Where the end came from: the event stream (last slot exited 0), or the poll.
            "end": "events" if exits and exits.done_at else "poll", "seconds_polled": round(polled, 3),
            "conflicts_per_1000": round(1000 * extra / (n + extra), 1), "job": jid,
            # Where the slots' last attempts ran: a batch on one agent costs less CPU per task
            # than one split over two (session 26), so a run is read with its split.
            "tasks_by_node": dict(sorted(collections.Counter(t["node"] for t in job["tasks"]).items())),
            # CPU of the three agents and their tasks per task (the client's polls included),
            # up to the poll that saw the job complete: against the wall time per task × 2
            # cores, it says how busy the machine was.
            "cpu_ms_per_task": round(1000 * cpu / n, 3), "cores_busy": round(cpu / polled, 2),
            # The same split by agent: each agent's own CPU, then its tasks' (ms per task).
            "agent_ms_per_task": [round(1000 * (b[0] - a[0]) / n, 3) for a, b in zip(p0, p1)],
            "tasks_ms_per_task": [round(1000 * (b[1] - a[1]) / n, 3) for a, b in zip(p0, p1)],
            # This client's own CPU (its requests, the event stream's reader): the agents do
            # not pay it, but on a 2-core machine it runs on their cores.
            "client_ms_per_task": round(1000 * me / n, 3)}

def single(api, jid):
    """Submits a single-task service job (`sleep 30`), polls it every 1 ms until its task runs
    (at most 60,000 polls), deletes it; returns the ms from the POST to `running`, and the ms
    the POST itself took (its answer waits for the write's fsync here and on a peer)."""
    t0 = time.perf_counter()
    st, _ = api.call("POST", "/v1/jobs", {"id": jid, "type": "service", "count": 1, "command": "sleep",
                                           "args": ["30"], "resources": {"cpu": 10, "memory": 1}})
    assert st in (200, 202), st
    post_ms = (time.perf_counter() - t0) * 1000
    for _ in range(60000):
        _, job = api.call("GET", f"/v1/jobs/{jid}")
        if job["tasks"][0]["state"] == "running": break
        time.sleep(0.001)
    else: raise SystemExit(f"job {jid} not running after 60,000 polls")
    ms = (time.perf_counter() - t0) * 1000
    api.call("DELETE", f"/v1/jobs/{jid}")
    return ms, post_ms

def fdatasync_ms(count=200):
    """This machine's fdatasync of a 4 KiB append in the bench's temp dir, p50 and p99 over
    `count`: the floor under the singles' latency, which waits for two of them in turn."""
    lat = []
    with tempfile.NamedTemporaryFile(dir=os.environ.get("TMPDIR", "/tmp")) as f:
        for _ in range(count):
            f.write(b"x" * 4096); f.flush(); t = time.perf_counter(); os.fdatasync(f.fileno())
            lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    return {"p50_ms": round(statistics.median(lat), 3), "p99_ms": round(p99(lat), 3)}

def p99(ordered):
    """The 99th percentile of a sorted, non-empty list (its nearest rank)."""
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

def singles(api, count):
    runs = [single(api, f"one{i}") for i in range(count)]
    lat = sorted(r[0] for r in runs); post = sorted(r[1] for r in runs)
    return {"jobs": count, "p50_ms": round(statistics.median(lat), 2),
            "p99_ms": round(p99(lat), 2), "max_ms": round(lat[-1], 2),
            "post_p50_ms": round(statistics.median(post), 2), "fdatasync": fdatasync_ms()}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000"); ap.add_argument("--singles", type=int, default=200)
    ap.add_argument("--out"); ap.add_argument("--bin", default=BIN)
    ap.add_argument("--placement", help="the batches' placement strategy (default: the job default, binpack)")
    ap.add_argument("--max-launches", type=int, help="the agents' --max-launches (default: theirs)")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="shoal-sched-bench-")
    print(json.dumps({"data_and_logs": root}), flush=True)
    # A root agent runs tasks as `nobody`, which must reach its data dir.
    os.chmod(root, 0o755)
    key = os.path.join(root, "cluster.key")
    open(key, "w").write(subprocess.check_output([a.bin, "keygen"]).decode())
    ceiling = [spawn_ceiling(root)]
    print(json.dumps({"spawn_ceiling_before": ceiling[0]}), flush=True)
    agents = start_agents(root, key, a.bin, ["--max-launches", str(a.max_launches)] if a.max_launches else [])
    api = Api(agents[0]["http"], agents[0]["token_file"])
    out = {"batches": [], "machine": "2 vCPU, 24 GiB", "spawn_ceiling": ceiling}
    try:
        if a.singles > 0:
            out["singles"] = singles(api, a.singles); print(json.dumps(out["singles"]), flush=True)
        for i, n in enumerate(int(x) for x in a.sizes.split(",")):
            r = batch(api, n, i, [x["proc"].pid for x in agents], a.placement, agents[0]); out["batches"].append(r); print(json.dumps(r), flush=True)
        out["rss_mib_after"] = [round(rss_mib(x["proc"].pid), 1) for x in agents]
        _, stats = api.call("GET", "/v1/jobs")
        out["tasks_in_tables"] = sum(len(j["tasks"]) for j in stats)
        print(json.dumps({"rss_mib_after": out["rss_mib_after"], "tasks_in_tables": out["tasks_in_tables"]}), flush=True)
        ceiling.append(spawn_ceiling(root)); print(json.dumps({"spawn_ceiling_after": ceiling[1]}), flush=True)
        two = statistics.median(c["two_in_flight_per_s"] for c in ceiling)
        for r in out["batches"]:
            r["share_of_two_in_flight_ceiling"] = round(r["tasks_per_s"] / two, 3)
        print(json.dumps({"share_of_two_in_flight_ceiling": [r["share_of_two_in_flight_ceiling"] for r in out["batches"]]}), flush=True)
    finally:
        for x in agents:
            x["proc"].send_signal(signal.SIGTERM)
        for x in agents:
            try: x["proc"].wait(30)
            except subprocess.TimeoutExpired: x["proc"].kill()
    if a.out: json.dump(out, open(a.out, "w"), indent=2)

if __name__ == "__main__":
    main()
