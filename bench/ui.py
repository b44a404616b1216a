#!/usr/bin/env python3
"""Web UI benchmark (issue 16): the map of a 1,000-node cluster in headless Chromium.

A synthetic agent (this script, Python's http.server) serves the UI's own files from
node/src/ui/ and a fake API: --nodes nodes in racks of 25, --jobs jobs of --tasks-per-job
tasks spread over them (every other job's tasks with a dynamic port, every node with the
default port range 20000-32000, one node in 50 draining, drained or ineligible), and an event
stream that flips one node between alive and suspect every --period-ms (a Node/StatusChanged
event). Chromium opens the
map twice: grouped by rack (the default: one summary tile per rack) and with every node as a
tile (`#/map/all`). The page reports its own timings in its title (node/src/ui/ui.js: the
first draw with nodes, each draw including layout, and each update from an event's arrival to
the end of the draw showing it); they are read through the DevTools endpoint after
--seconds.

Usage: bench/ui.py [--nodes 1000] [--jobs 100] [--tasks-per-job 30] [--seconds 20] [--out FILE]
                   [--ui DIR (the UI files to serve; default node/src/ui)]
"""
import argparse, json, os, random, shutil, subprocess, tempfile, threading, time, urllib.request
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UI = os.path.join(ROOT, "node", "src", "ui")

class Cluster:
    def __init__(self, nodes, jobs, per_job, seed=1):
        rnd = random.Random(seed)
        self.lock = threading.Lock()
        self.nodes = [{"name": f"n{i:04d}", "addr": "10.0.0.1:7946", "status": "alive", "generation": 1,
                       "resources": {"capacity": {"cpu_millicores": 16000, "memory_mib": 65536, "disk_mib": 0},
                                     "allocated": {"cpu_millicores": 0, "memory_mib": 0, "disk_mib": 0}},
                       "attributes": {"rack": f"r{i // 25:02d}"}, "draining": False, "last_update_ms": 0,
                       "quic_addr": None, "http_addr": None, "eligible": True,
                       "port_range": {"first": 20000, "last": 32000}} for i in range(nodes)]
        for i, n in enumerate(self.nodes):
            if i % 50 == 7:
                kind = (i // 50) % 3
                n["eligible"] = False
                if kind < 2:
                    n["draining"] = True
                    n["drain"] = {"deadline_ms": 3600000, "complete": kind == 1, "live_tasks": 0 if kind == 1 else 3}
        self.jobs = []
        for j in range(jobs):
            tasks = []
            for s in range(per_job):
                n = self.nodes[rnd.randrange(nodes)]
                n["resources"]["allocated"]["cpu_millicores"] += 100
                n["resources"]["allocated"]["memory_mib"] += 256
                tasks.append({"slot": s, "attempt": 1, "node": n["name"], "state": "running", "exit_code": None,
                              "pending_reason": None, "reason": None, "detail": None, "ip": None,
                              "ports": {"http": 20000 + rnd.randrange(12001)} if j % 2 == 0 else {},
                              "health": rnd.choice(["healthy"] * 8 + ["unhealthy", "unknown"]), "health_note": None})
            self.jobs.append({"id": f"job{j:03d}", "type": "service", "status": "running", "count": per_job,
                              "stopped": False, "version": {"wall_ms": 0, "logical": 0}, "tasks": tasks})
        self.rnd = rnd
        self.index = 0

    def flip(self):
        with self.lock:
            n = self.nodes[self.rnd.randrange(len(self.nodes))]
            was = n["status"]; n["status"] = "suspect" if was == "alive" else "alive"
            self.index += 1
            return [{"index": self.index, "time_ms": int(time.time() * 1000), "node": "synthetic", "generation": 1,
                     "topic": "Node", "type": "StatusChanged",
                     "payload": {"node": n["name"], "generation": 1, "addr": n["addr"], "from": was, "to": n["status"]}}]

def handler(cluster, period, ui):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def send(self, body, ctype):
            self.send_response(200); self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
        def do_GET(self):
            path = self.path.split("?")[0]
            files = {"/ui": ("index.html", "text/html"), "/ui/ui.js": ("ui.js", "text/javascript"),
                     "/ui/ui.css": ("ui.css", "text/css")}
            if path in files:
                name, ctype = files[path]
                return self.send(open(os.path.join(ui, name), "rb").read(), ctype)
            if path == "/v1/nodes":
                with cluster.lock: return self.send(json.dumps(cluster.nodes).encode(), "application/json")
            if path == "/v1/jobs":
                return self.send(json.dumps(cluster.jobs).encode(), "application/json")
            if path == "/v1/agent/self":
                return self.send(json.dumps({"node": {"name": "synthetic"}, "cluster": "bench"}).encode(), "application/json")
            if path == "/v1/events":
                self.send_response(200); self.send_header("Content-Type", "text/event-stream"); self.end_headers()
                try:
                    while True:
                        time.sleep(period)
                        for e in cluster.flip():
                            self.wfile.write(f"id: {e['index']}\ndata: {json.dumps(e)}\n\n".encode()); self.wfile.flush()
                except OSError:
                    return
            self.send_response(404); self.end_headers()
    return H

def title_of(port):
    pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5))
    return next((p["title"] for p in pages if p["type"] == "page" and "/ui" in p["url"]), "")

def fields(title):
    out = {}
    for part in title.split(" · "):
        if "=" in part:
            k, v = part.split("=", 1); out[k] = v
    return out

def run_page(url, seconds):
    prof = tempfile.mkdtemp(prefix="shoal-bench-ui-chromium-")
    p = subprocess.Popen(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          f"--user-data-dir={prof}", "--remote-debugging-port=0", "--window-size=1400,900", url],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(prof, "DevToolsActivePort")
        for _ in range(300):
            if os.path.exists(port_file) and open(port_file).read().strip(): break
            time.sleep(0.1)
        port = int(open(port_file).read().split()[0])
        time.sleep(seconds)
        f = fields(title_of(port))
        first = float(f["first_ms"])
        d50, d99, dn = f["draw_ms"].split("/"); u50, u99, un = f["update_ms"].split("/")
        return {"first_render_ms": first, "draw_p50_ms": float(d50), "draw_p99_ms": float(d99), "draws": int(dn),
                "update_p50_ms": float(u50), "update_p99_ms": float(u99), "updates": int(un), "tiles": f["nodes"]}
    finally:
        p.terminate(); p.wait(timeout=30); shutil.rmtree(prof, ignore_errors=True)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000); ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--tasks-per-job", type=int, default=30); ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--period-ms", type=float, default=200); ap.add_argument("--out")
    ap.add_argument("--ui", default=UI)
    a = ap.parse_args()
    cluster = Cluster(a.nodes, a.jobs, a.tasks_per_job)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler(cluster, a.period_ms / 1000, a.ui))
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}/ui"
    commit = subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).decode().strip()
    result = {"commit": commit, "nodes": a.nodes, "tasks": a.jobs * a.tasks_per_job, "event_period_ms": a.period_ms,
              "seconds": a.seconds, "grouped_by_rack": run_page(base + "#/map", a.seconds),
              "every_tile": run_page(base + "#/map/all", a.seconds)}
    print(json.dumps(result, indent=2))
    if a.out:
        with open(a.out, "w") as f: json.dump(result, f, indent=2)
    srv.shutdown()

if __name__ == "__main__":
    main()
