#!/usr/bin/env python3
"""Membership benchmark: N real `shoal agent` processes on 127.0.0.1.

Measures, per N:
  - join convergence: from the start of the last agent (its "agent started" log line) until every
    agent has logged every other member as alive;
  - detection: from `kill -9` of one agent until each survivor logs it down (median and max over
    survivors; several kills, one at a time);
  - idle CPU % of a core and RSS per agent (from /proc) over a quiet window;
  - gossip bytes sent per agent per second (sealed UDP payload bytes, from /v1/agent/self);
  - false positives: any member logged suspect or down that was not killed.
Optionally with a CPU hog (one busy process per core) running beside the agents.

Usage: bench/membership.py [--sizes 8,16,32] [--idle 30] [--kills 3] [--hog] [--out FILE] [--bin PATH]
Join runs only (issue 17): bench/membership.py --sizes 32 --repeat 50 --idle 0 --kills 0
Staggered joins (starts spread over 2 s): add --stagger 2
Needs a release build: cargo build --release (or --bin / SHOAL_BIN=/path/to/shoal)
Each join reports its slowest pair: which agent learned of which member last, and when
(seconds after the last start), so a tail can be traced in the agents' logs (kept in the
temp dir the run names).
"""
import argparse, json, os, re, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SHOAL_BIN") or os.path.join(ROOT, "target", "release", "shoal")
TS = re.compile(r"^(\S+Z)\s")
STATUS = re.compile(r"member status member=(\S+?)@\S+ from=\S+ to=(\w+)")

def ts(line):
    m = TS.match(line)
    return datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp() if m else None

def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]; s.close(); return p

def get(addr, path):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=5) as r:
        return json.loads(r.read())

def proc_cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return int(parts[11]) + int(parts[12])  # utime + stime

def proc_rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0

def proc_pss_kib(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0

class Agent:
    def __init__(self, name, key, root, seed=None):
        self.name, self.dir = name, os.path.join(root, name)
        self.log_path = os.path.join(root, name + ".log")
        os.makedirs(self.dir, exist_ok=True)
        self.addr_file = os.path.join(self.dir, "addresses.json")
        args = [BIN, "agent", "--name", name, "--bind", "127.0.0.1:0", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0",
                "--cluster-key-file", key, "--data-dir", self.dir, "--cpu", "1000", "--memory", "1024"]
        if seed: args += ["--join", seed]
        self.log = open(self.log_path, "w")
        env = dict(os.environ, RUST_LOG="info")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL, env=env)
        self.http = self.gossip = None

    def wait_ready(self, deadline):
        while time.time() < deadline:
            try:
                with open(self.addr_file) as f: info = json.load(f)
                self.http, self.gossip = info["http"], info["gossip"]; return
            except (OSError, ValueError): time.sleep(0.02)
        raise SystemExit(f"{self.name} did not start")

    def lines(self):
        with open(self.log_path) as f: return f.readlines()

    def started_at(self):
        for l in self.lines():
            if "agent started" in l: return ts(l)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL); self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try: self.proc.wait(10)
            except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()

def status_events(agent):
    out = []
    for l in agent.lines():
        m = STATUS.search(l)
        if m: out.append((ts(l), m.group(1), m.group(2)))
    return out

STAGGER_S = 0.0

def wait_until(pred, deadline, what):
    while time.time() < deadline:
        if pred(): return
        time.sleep(0.05)
    raise SystemExit(f"timed out: {what}")

def run_size(n, idle_s, kills, hog):
    root = tempfile.mkdtemp(prefix=f"shoal-bench-{n}-")
    # A root agent runs tasks as `nobody`, which must reach its data dir.
    os.chmod(root, 0o755)
    key = os.path.join(root, "cluster.key")
    with open(key, "w") as f: f.write(subprocess.check_output([BIN, "keygen"]).decode())
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)] if hog else []
    agents = []
    try:
        seed = Agent("n1", key, root); seed.wait_ready(time.time() + 30); agents.append(seed)
        others = []
        for i in range(2, n + 1):
            # --stagger S spreads the joiners' starts over S seconds (racks that boot one after
            # another), where 0 starts them all at once.
            if STAGGER_S > 0 and i > 2: time.sleep(STAGGER_S / max(1, n - 2))
            others.append(Agent(f"n{i}", key, root, seed.gossip))
        for a in others: a.wait_ready(time.time() + 60)
        agents += others
        names = {a.name for a in agents}
        def converged():
            for a in agents:
                alive = {m for _, m, s in status_events(a) if s == "alive"} | {a.name}
                if alive != names: return False
            return True
        wait_until(converged, time.time() + 60, "join convergence")
        last_start = max(a.started_at() for a in agents)
        conv, slowest = 0.0, None
        for a in agents:
            firsts = {}
            for t, m, s in status_events(a):
                if s == "alive" and m not in firsts: firsts[m] = t
            m, t = max(firsts.items(), key=lambda kv: kv[1])
            if t - last_start > conv: conv, slowest = t - last_start, f"{a.name} learned of {m}"
        if idle_s <= 0 and kills == 0:
            # Join runs only (--idle 0 --kills 0).
            return {"n": n, "hog": hog, "converge_s": round(conv, 3), "slowest": slowest, "dir": root}
        # idle window
        time.sleep(2)
        tick = os.sysconf("SC_CLK_TCK")
        c0 = {a.name: proc_cpu_ticks(a.proc.pid) for a in agents}
        b0 = {a.name: get(a.http, "/v1/agent/self")["transport"]["bytes_out"] for a in agents}
        t0 = time.time(); time.sleep(idle_s); t1 = time.time()
        cpu = [100.0 * (proc_cpu_ticks(a.proc.pid) - c0[a.name]) / tick / (t1 - t0) for a in agents]
        bps = [(get(a.http, "/v1/agent/self")["transport"]["bytes_out"] - b0[a.name]) / (t1 - t0) for a in agents]
        rss = [proc_rss_kib(a.proc.pid) / 1024 for a in agents]
        # Where it is: anonymous (heap, stacks) and file-backed (the program's pages, shared
        # with the page cache and every agent of this machine); PSS splits shared pages.
        rss_anon = [proc_rss_kib(a.proc.pid, "RssAnon") / 1024 for a in agents]
        rss_file = [proc_rss_kib(a.proc.pid, "RssFile") / 1024 for a in agents]
        pss = [proc_pss_kib(a.proc.pid) / 1024 for a in agents]
        # kills, one at a time, never the seed
        killed, detections = [], []
        for k in range(kills):
            victim = agents[-(k + 1)]
            survivors = [a for a in agents if a.name not in killed and a is not victim]
            t_kill = time.time(); victim.kill9(); killed.append(victim.name)
            def all_down():
                return all(any(m == victim.name and s == "down" for _, m, s in status_events(a)) for a in survivors)
            wait_until(all_down, time.time() + 60, f"detection of {victim.name}")
            per = [min(t for t, m, s in status_events(a) if m == victim.name and s == "down") - t_kill for a in survivors]
            detections.append({"victim": victim.name, "median_s": statistics.median(per), "all_s": max(per)})
        time.sleep(1)
        fps = []
        for a in agents:
            if a.name in killed: continue
            for t, m, s in status_events(a):
                if s in ("suspect", "down") and m not in killed:
                    fps.append(f"{a.name} saw {m} {s}")
        return {
            "n": n, "hog": hog, "converge_s": round(conv, 3),
            "detect_all_s_median": round(statistics.median(d["all_s"] for d in detections), 3) if detections else None,
            "detect_all_s": [round(d["all_s"], 3) for d in detections],
            "detect_median_survivor_s": [round(d["median_s"], 3) for d in detections],
            "idle_cpu_pct_mean": round(statistics.mean(cpu), 3), "idle_cpu_pct_max": round(max(cpu), 3),
            "rss_mib_mean": round(statistics.mean(rss), 2), "rss_mib_max": round(max(rss), 2),
            "rss_anon_mib_mean": round(statistics.mean(rss_anon), 2),
            "rss_file_mib_mean": round(statistics.mean(rss_file), 2),
            "pss_mib_mean": round(statistics.mean(pss), 2),
            "gossip_bytes_per_s_mean": round(statistics.mean(bps), 1), "gossip_bytes_per_s_max": round(max(bps), 1),
            "false_positives": len(fps), "false_positive_examples": fps[:5],
            "idle_window_s": idle_s,
        }
    finally:
        for a in agents: a.stop()
        for h in hogs: h.kill(); h.wait()

def main():
    # SIGTERM unwinds like Ctrl-C, so the `finally` blocks stop the agents and the CPU hogs.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="8,16,32"); p.add_argument("--idle", type=float, default=30)
    p.add_argument("--kills", type=int, default=3); p.add_argument("--hog", action="store_true")
    p.add_argument("--out")
    p.add_argument("--bin", help="the shoal binary (default: $SHOAL_BIN or target/release/shoal)")
    p.add_argument("--repeat", type=int, default=1, help="run each size this many times")
    p.add_argument("--stagger", type=float, default=0.0,
                   help="spread the joiners' starts over this many seconds (default: all at once)")
    a = p.parse_args()
    global BIN, STAGGER_S
    if a.bin: BIN = a.bin
    STAGGER_S = a.stagger
    if not os.path.exists(BIN): raise SystemExit("build first: cargo build --release")
    results = []
    for n in [int(x) for x in a.sizes.split(",")]:
        for _ in range(a.repeat):
            r = run_size(n, a.idle, a.kills, a.hog); results.append(r)
            print(json.dumps(r), flush=True)
    if a.out:
        with open(a.out, "w") as f: json.dump(results, f, indent=2)

if __name__ == "__main__":
    main()
