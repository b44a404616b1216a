#!/usr/bin/env python3
"""DNS benchmark (issue 15): 3 real agents on 127.0.0.1, services with ports and http checks.

Measures:
  - throughput: queries per second one agent answers (A and SRV for NAME.service.shoal.),
    with `dnsperf` (Debian's package) when installed, else with this script's own UDP load
    generator (which is slower than the agent, so it measures itself: say which one ran);
  - health-change latency: `kill -STOP` of one instance's process, then the time until EVERY
    agent's SRV answer for that service drops it (polled every 5 ms per agent), and after
    `kill -CONT` until every answer has it back; p50/p99 over --trials.

The health change is bounded below by the check: interval_ms + timeout_ms (a hung process
answers nothing, so the check times out), then one replication push to the other agents.

Usage: bench/dns.py [--services 100] [--trials 50] [--seconds 10] [--bin target/release/shoal]
Needs a release build (cargo build --release) and python3 (the workload is `python3 -m
http.server`).
"""
import argparse, json, os, random, shutil, signal, socket, statistics, struct, subprocess, sys, tempfile, time
import http.client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def query(name, qtype, qid):
    """A minimal DNS query packet (the client side only; the agent uses hickory)."""
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".")) + b"\0"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack(">HH", qtype, 1)

def answers(sock, addr, name, qtype=1):
    """ANCOUNT of the agent's answer (None on timeout)."""
    qid = random.randrange(65536)
    sock.sendto(query(name, qtype, qid), addr)
    deadline = time.time() + 1
    while time.time() < deadline:
        try:
            data, _ = sock.recvfrom(4096)
        except socket.timeout:
            return None
        if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == qid:
            return struct.unpack(">H", data[6:8])[0]
    return None

class Api:
    def __init__(self, addr, token_file):
        host, port = addr.rsplit(":", 1)
        self.c = http.client.HTTPConnection(host, int(port), timeout=60)
        self.token = next(l.strip() for l in open(token_file) if l.strip())  # the first token
    def call(self, method, path, body=None):
        self.c.request(method, path, body=json.dumps(body) if body is not None else None,
                       headers={"content-type": "application/json", "authorization": f"Bearer {self.token}"})
        r = self.c.getresponse(); data = r.read()
        return r.status, (json.loads(data) if data else None)

def start_agents(root, key, binary, n=3):
    agents = []
    for i in range(1, n + 1):
        d = os.path.join(root, f"n{i}"); os.makedirs(d)
        args = [binary, "agent", "--name", f"n{i}", "--bind", "127.0.0.1:0", "--http", "127.0.0.1:0",
                "--dns", "127.0.0.1:0", "--cluster-key-file", key, "--data-dir", d,
                "--cpu", "1000000", "--memory", "1000000"]
        if agents: args += ["--join", agents[0]["gossip"]]
        log = open(os.path.join(root, f"n{i}.log"), "w")
        p = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                             env=dict(os.environ, RUST_LOG=os.environ.get("SHOAL_BENCH_LOG", "warn")))
        info = None
        for _ in range(3000):
            try:
                info = json.load(open(os.path.join(d, "addresses.json"))); break
            except (OSError, ValueError): time.sleep(0.01)
        if info is None: raise SystemExit(f"n{i} did not start (log: {root}/n{i}.log)")
        host, port = info["dns"].rsplit(":", 1)
        agents.append({"proc": p, "http": info["http"], "gossip": info["gossip"],
                       "token_file": info["token_file"], "dns": (host, int(port))})
    return agents

def spec(name, count, interval_ms, timeout_ms):
    # Tasks run as `nobody`: a python3 under /root (pyenv) is out of its reach.
    return {"id": name, "type": "service", "count": count, "command": "/usr/bin/python3",
            "args": ["-m", "http.server", "${SHOAL_PORT_HTTP}", "--bind", "${SHOAL_IP}"],
            "resources": {"cpu": 10, "memory": 32}, "ports": [{"name": "http"}],
            "checks": [{"name": "ready", "type": "http", "port": "http", "path": "/",
                        "interval_ms": interval_ms, "timeout_ms": timeout_ms, "failures": 0}]}

def wait(pred, seconds, what):
    end = time.time() + seconds
    while time.time() < end:
        v = pred()
        if v: return v
        time.sleep(0.05)
    raise SystemExit(f"timed out after {seconds} s: {what}")

def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def throughput(agent, names, seconds):
    host, port = agent["dns"]
    if shutil.which("dnsperf"):
        qf = tempfile.NamedTemporaryFile("w", delete=False, suffix=".txt")
        for n in names:
            qf.write(f"{n}.service.shoal A\n{n}.service.shoal SRV\n")
        qf.close()
        out = subprocess.run(["dnsperf", "-s", host, "-p", str(port), "-d", qf.name, "-l", str(seconds),
                              "-c", "4", "-Q", "200000", "-q", "200"], capture_output=True, text=True).stdout
        qps = lost = None
        for line in out.splitlines():
            if "Queries per second" in line: qps = float(line.split(":")[1])
            if "Queries lost" in line: lost = line.split(":")[1].strip()
        return {"tool": "dnsperf", "qps": qps, "lost": lost, "raw": out[-1500:]}
    # Fallback: one socket, a window of 64 queries in flight.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.5); s.connect((host, port))
    pkts = [query(f"{n}.service.shoal", t, 0) for n in names for t in (1, 33)]
    sent = got = 0; t0 = time.time(); inflight = 0
    while time.time() - t0 < seconds:
        while inflight < 64:
            s.send(pkts[sent % len(pkts)]); sent += 1; inflight += 1
        try:
            s.recv(4096); got += 1; inflight -= 1
        except socket.timeout:
            inflight = 0
    return {"tool": "python", "qps": got / (time.time() - t0), "lost": sent - got}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--interval-ms", type=int, default=300)
    ap.add_argument("--timeout-ms", type=int, default=200)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "shoal"))
    ap.add_argument("--out")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="shoal-bench-dns-"); os.chmod(root, 0o755)
    key = os.path.join(root, "cluster.key")
    with open(key, "w") as f: f.write(subprocess.check_output([a.bin, "keygen"]).decode())
    agents = start_agents(root, key, a.bin)
    result = {"services": a.services, "interval_ms": a.interval_ms, "timeout_ms": a.timeout_ms}
    try:
        api = Api(agents[0]["http"], agents[0]["token_file"])
        wait(lambda: sum(1 for n in api.call("GET", "/v1/nodes")[1] if n["status"] == "alive") == 3, 30, "3 alive")
        # The load target: --services services of 1 instance; the latency target: one of 3.
        names = [f"s{i}" for i in range(a.services)]
        for n in names:
            st, body = api.call("POST", "/v1/jobs", spec(n, 1, 2000, 1000))
            if st != 200: raise SystemExit(f"submit {n}: {st} {body}")
        st, body = api.call("POST", "/v1/jobs", spec("web", 3, a.interval_ms, a.timeout_ms))
        if st != 200: raise SystemExit(f"submit web: {st} {body}")
        socks = []
        for ag in agents:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.5); socks.append((s, ag["dns"]))
        def healthy_everywhere(want, name="web.service.shoal"):
            # SRV: one record per instance (A records merge instances sharing an address, as
            # all do here on 127.0.0.1).
            return all(answers(s, addr, name, 33) == want for s, addr in socks)
        try:
            wait(lambda: healthy_everywhere(3), 120, "3 healthy web instances in every agent's DNS")
        except SystemExit:
            print("answers:", [answers(s, addr, "web.service.shoal", 33) for s, addr in socks],
                  "catalog:", api.call("GET", "/v1/services/web"), "job:", api.call("GET", "/v1/jobs/web"))
            raise
        wait(lambda: all(answers(socks[0][0], socks[0][1], f"{n}.service.shoal") == 1 for n in names), 300,
             f"{a.services} services answered")
        result["throughput"] = throughput(agents[0], names, a.seconds)
        print("throughput:", {k: v for k, v in result["throughput"].items() if k != "raw"}, flush=True)
        down, up = [], []
        for t in range(a.trials):
            _, job = api.call("GET", "/v1/services/web")
            inst = random.Random(t).choice(job["instances"])
            pids = []
            # The instance's process: the http.server listening on its port.
            ports = inst["ports"]
            first = list(ports.values())[0] if isinstance(ports, dict) else ports[0]
            port = str(first["port"] if isinstance(first, dict) else first[1] if isinstance(first, list) else first)
            for p in os.listdir("/proc"):
                if not p.isdigit(): continue
                try:
                    cmd = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
                except OSError: continue
                if b"http.server" in cmd and port.encode() in cmd: pids.append(int(p))
            if len(pids) != 1: raise SystemExit(f"trial {t}: found {pids} for port {port}")
            pid = pids[0]
            t0 = time.monotonic(); os.kill(pid, signal.SIGSTOP)
            pending = set(range(len(socks))); times = {}
            while pending and time.monotonic() - t0 < 30:
                for k in list(pending):
                    s, addr = socks[k]
                    if answers(s, addr, "web.service.shoal", 33) == 2: times[k] = time.monotonic() - t0; pending.discard(k)
                time.sleep(0.005)
            if pending: raise SystemExit(f"trial {t}: agents {pending} still answer 3 after 30 s")
            down.append(max(times.values()))
            t1 = time.monotonic(); os.kill(pid, signal.SIGCONT)
            pending = set(range(len(socks))); times = {}
            while pending and time.monotonic() - t1 < 30:
                for k in list(pending):
                    s, addr = socks[k]
                    if answers(s, addr, "web.service.shoal", 33) == 3: times[k] = time.monotonic() - t1; pending.discard(k)
                time.sleep(0.005)
            if pending: raise SystemExit(f"trial {t}: agents {pending} did not answer 3 again")
            up.append(max(times.values()))
        ms = lambda xs: {"p50_ms": round(1000 * pct(xs, 50), 1), "p99_ms": round(1000 * pct(xs, 99), 1),
                         "max_ms": round(1000 * max(xs), 1), "n": len(xs)}
        result["stop_to_every_answer"] = ms(down)
        result["cont_to_every_answer"] = ms(up)
        print("SIGSTOP -> every agent drops it:", result["stop_to_every_answer"])
        print("SIGCONT -> every agent has it back:", result["cont_to_every_answer"])
    finally:
        for ag in agents:
            ag["proc"].send_signal(signal.SIGTERM)
        for ag in agents:
            try: ag["proc"].wait(15)
            except subprocess.TimeoutExpired: ag["proc"].kill(); ag["proc"].wait()
    shutil.rmtree(root, ignore_errors=True)
    if a.out:
        with open(a.out, "w") as f: json.dump(result, f, indent=1)

if __name__ == "__main__":
    main()
